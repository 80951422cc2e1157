"""AdamW with linear warmup and cosine decay, global-norm clipping first (as HF/TRL do)."""

from __future__ import annotations

import math

import optax
from ml_collections import ConfigDict


def warmup_steps(opt: ConfigDict, total_steps: int) -> int:
    """`warmup_steps` when >= 0, else `warmup_ratio` of the run rounded up (the RM recipe uses 3%)."""
    if opt.get("warmup_steps", -1) >= 0:
        return int(opt.warmup_steps)
    return int(math.ceil(float(opt.get("warmup_ratio", 0.0)) * total_steps))


def make_schedule(opt: ConfigDict, total_steps: int) -> optax.Schedule:
    warm = min(warmup_steps(opt, total_steps), max(total_steps - 1, 0))
    if opt.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, opt.lr, max(warm, 1)), optax.constant_schedule(opt.lr)], [warm]
        )
    if opt.schedule != "cosine":
        raise ValueError(f"optimizer.schedule={opt.schedule!r}; expected 'cosine' or 'constant'")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.lr, warmup_steps=warm, decay_steps=max(total_steps, warm + 1), end_value=0.0
    )


def make_optimizer(opt: ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(opt, total_steps)
    chain = []
    if opt.grad_clip and opt.grad_clip > 0:
        chain.append(optax.clip_by_global_norm(opt.grad_clip))
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay))
    return optax.chain(*chain), schedule
