"""What happens after each train step, one job per hook: guard, log, evaluate, checkpoint, plot.

The loop (janus_jax/train/trainer.py) calls `after_step(ctx)` on each hook in order and `close()` at the
end. Hooks read the step's metrics through `ctx.values()`, which fetches them from the devices once per
step and only when some hook asks, so steps between logging points stay asynchronous.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Protocol

import jax
import numpy as np
from etils import epath

from janus_jax.objectives.base import real_tokens
from janus_jax.train.metrics import MetricsWriter, plot_loss, train_flops_per_token


class NonFiniteLossError(RuntimeError):
    """Raised before any checkpoint is written when the loss or gradient norm is NaN/inf."""


@dataclasses.dataclass
class StepContext:
    """One finished step: `step` counts steps done (1-based)."""

    step: int
    total_steps: int
    state: Any
    metrics: Any  # device arrays
    local_batch: dict[str, np.ndarray]
    _values: dict[str, float] | None = None

    @property
    def last(self) -> bool:
        return self.step == self.total_steps

    def due(self, every: int) -> bool:
        """Every `every` steps (0 = never) and at the end of the run."""
        return bool(every) and self.step % every == 0 or self.last

    def values(self) -> dict[str, float]:
        if self._values is None:
            self._values = {k: float(v) for k, v in jax.device_get(self.metrics).items()}
        return self._values


class Hook(Protocol):
    def after_step(self, ctx: StepContext) -> None: ...

    def close(self) -> None: ...


class MetricsLog:
    """metrics.jsonl (and TensorBoard) plus the latest value of every metric, which `train` returns."""

    def __init__(self, workdir: epath.Path, enabled: bool, previous: dict[str, Any]):
        self.writer = MetricsWriter(workdir, enabled=enabled)
        self.last = dict(previous)

    def write(self, step: int, values: dict[str, float]) -> None:
        self.writer.write(step, values)
        self.last.update(step=step, **values)

    def after_step(self, ctx: StepContext) -> None:
        pass  # written to by the hooks that log

    def close(self) -> None:
        self.writer.close()


class NonFiniteGuard:
    """Stops the run on a NaN/inf metric at any step that logs or checkpoints, before either happens."""

    def __init__(self, log_every: int, checkpoint_every: int):
        self.log_every, self.checkpoint_every = log_every, checkpoint_every

    def after_step(self, ctx: StepContext) -> None:
        if not (ctx.due(self.log_every) or ctx.due(self.checkpoint_every)):
            return
        values = ctx.values()
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(
                f"non-finite metrics at step {ctx.step}: {values}; stopping before any checkpoint of this state"
            )

    def close(self) -> None:
        pass


class LogProgress:
    """Train metrics every `every` steps with throughput, MFU and epoch; a progress bar on process 0."""

    def __init__(self, log: MetricsLog, every: int, *, start: int, run, peak_flops: float | None, enabled: bool):
        from tqdm.auto import tqdm

        self.log, self.every, self.run, self.peak = log, every, run, peak_flops
        self.bar = tqdm(total=run.total_steps, initial=start, disable=not enabled, desc="train", dynamic_ncols=True)
        self._reset()

    def _reset(self) -> None:
        self.tokens, self.head, self.started = 0, 0, time.perf_counter()

    def after_step(self, ctx: StepContext) -> None:
        hosts = jax.process_count()
        self.tokens += real_tokens(ctx.local_batch) * hosts
        self.head += self.run.objective.head_positions(ctx.local_batch) * hosts
        if not ctx.due(self.every):
            return
        values = dict(ctx.values())
        values["tokens_per_second"] = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        if self.peak:
            seq_len = int(self.run.cfg.data.seq_len)
            flops = train_flops_per_token(self.run.model_config, seq_len, self.head / max(self.tokens, 1))
            values["mfu"] = values["tokens_per_second"] * flops / (self.peak * jax.device_count())
        values["epoch"] = (ctx.step - 1) / self.run.data.train.steps_per_epoch
        self.log.write(ctx.step, values)
        self.bar.update(ctx.step - self.bar.n)
        self.bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{values['tokens_per_second']:.0f}")
        self._reset()

    def close(self) -> None:
        self.bar.close()


class PeriodicEval:
    """Exact averages over the held-out split every `every` steps (0 = only at the end)."""

    def __init__(self, log: MetricsLog, every: int, run, ref_params):
        self.log, self.every, self.run, self.ref_params = log, every, run, ref_params

    def after_step(self, ctx: StepContext) -> None:
        if self.run.data.eval is not None and ctx.due(self.every):
            self.log.write(ctx.step, evaluate(self.run, ctx.state["params"], self.ref_params))

    def close(self) -> None:
        pass


def evaluate(run, params, ref_params=None) -> dict[str, float]:
    """Sums over every eval batch, one division: the exact average over held-out tokens or pairs."""
    loss_sum, weight, sums = 0.0, 0.0, {}
    eval_data = run.data.eval
    for i in range(eval_data.steps_per_epoch):
        batch = run.global_batch(eval_data.batch(i))
        ls, w, ms = jax.device_get(run.eval_fn(params, batch, ref_params))
        loss_sum, weight = loss_sum + float(ls), weight + float(w)
        for k, v in ms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    weight = max(weight, 1.0)
    out = {f"eval/{k}": v / weight for k, v in sums.items()}
    out["eval/loss"] = loss_sum / weight
    return out


class SaveCheckpoint:
    """Saves the state (async) every `every` steps and at the end, with the data position and `meta`
    (the model config and the prompt template, what loading the checkpoint later needs)."""

    def __init__(self, checkpointer, every: int, meta: dict):
        self.ckpt, self.every, self.meta = checkpointer, every, meta

    def after_step(self, ctx: StepContext) -> None:
        if ctx.due(self.every):
            self.ckpt.save(ctx.step, ctx.state, {"data_step": ctx.step, **self.meta})

    def close(self) -> None:
        pass  # the loop owns the checkpointer and closes it (waiting for the last async save)


class PlotLoss:
    """loss.png beside metrics.jsonl once the last step is logged."""

    def __init__(self, workdir: epath.Path, enabled: bool):
        self.workdir, self.enabled = workdir, enabled

    def after_step(self, ctx: StepContext) -> None:
        if ctx.last and self.enabled:
            plot_loss(self.workdir)

    def close(self) -> None:
        pass
