"""Training objectives as plug-ins of the one trainer.

An objective turns (model, micro-batch) into a summed loss, the weight it is averaged over
(tokens for SFT, pairs for the preference objectives) and summed metrics. Summing over
micro-batches and dividing once makes gradient accumulation exact: 4 micro-batches of 8 equal one
batch of 32. Filler pairs that complete an epoch's last batch carry `pair_weights = 0`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from janus_jax import objectives


class LossOutput(NamedTuple):
    loss_sum: jax.Array  # summed over the micro-batch
    weight: jax.Array  # what loss_sum and metric sums are divided by
    metric_sums: dict[str, jax.Array]


def sft_loss(model, batch: dict[str, jax.Array], ref_model=None) -> LossOutput:
    """Token-level NLL on response tokens (and EOS) only."""
    del ref_model
    weights = batch["loss_weights"].astype(jnp.float32)
    scored = weights > 0
    summed, _ = objectives.masked_sums(_target_logps(model, batch, scored), scored)
    loss_sum = -summed.sum()
    return LossOutput(loss_sum, weights.sum(), {"loss": loss_sum})


def _target_logps(model, batch: dict[str, jax.Array], scored: jax.Array) -> jax.Array:
    """Per-token log-probs [B, T] of the batch's targets at `scored` positions, 0 elsewhere."""
    targets = jnp.where(scored, batch["targets"], 0)
    return model.target_logps(batch["input_ids"], targets, batch["positions"], batch["segment_ids"], scored)


def _both_sides(batch: dict[str, jax.Array], key: str) -> jax.Array:
    return jnp.concatenate([batch[f"chosen_{key}"], batch[f"rejected_{key}"]], axis=0)


def _stacked_pairs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """[chosen; rejected] rows of every per-token key, for one forward pass over both sides."""
    keys = ("input_ids", "targets", "positions", "segment_ids", "loss_weights")
    return {key: _both_sides(batch, key) for key in keys}


def pair_logps(model, batch: dict[str, jax.Array]):
    """One forward over [chosen; rejected]: summed response log-probs and token counts, each [2, B]."""
    rows = _stacked_pairs(batch)
    response = rows["loss_weights"] > 0
    summed, counts = objectives.masked_sums(_target_logps(model, rows, response), response)
    b = batch["chosen_input_ids"].shape[0]
    return summed.reshape(2, b), counts.reshape(2, b)


def _pair_response_and_full_logps(model, batch: dict[str, jax.Array]):
    """One forward, two sums: over response tokens and over all real tokens (prompt + response), each [2, B].

    ORPO needs both; gathering the per-token log-probs once avoids a second forward pass.
    """
    rows = _stacked_pairs(batch)
    real = rows["segment_ids"] > 0
    response = rows["loss_weights"] > 0
    per_token = _target_logps(model, rows, real)
    b = batch["chosen_input_ids"].shape[0]

    def masked(mask):
        summed, counts = objectives.masked_sums(per_token, mask)
        return summed.reshape(2, b), counts.reshape(2, b)

    return masked(response), masked(real)


def _weighted_pair_metrics(w, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps) -> dict:
    """Sums (to be divided by Σw) of TRL's metrics; accuracies count strict wins, as TRL does."""
    return {
        "rewards/chosen": jnp.sum(w * chosen_rewards),
        "rewards/rejected": jnp.sum(w * rejected_rewards),
        "rewards/margins": jnp.sum(w * (chosen_rewards - rejected_rewards)),
        "rewards/accuracies": jnp.sum(w * (chosen_rewards > rejected_rewards)),
        "logps/chosen": jnp.sum(w * chosen_logps),
        "logps/rejected": jnp.sum(w * rejected_logps),
    }


def dpo_loss(model, batch, ref_model=None, *, cfg: ConfigDict) -> LossOutput:
    """DPO against a frozen reference (evaluated here) or precomputed reference log-probs."""
    (pc, pr), (nc, nr) = pair_logps(model, batch)
    if ref_model is not None:
        (rc, rr), _ = pair_logps(ref_model, batch)
        rc, rr = jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)
    else:
        rc, rr = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    if cfg.loss_type == "ipo":  # TRL length-normalises IPO
        pc, pr = objectives.mean_logps(pc, nc), objectives.mean_logps(pr, nr)
        rc, rr = objectives.mean_logps(rc, nc), objectives.mean_logps(rr, nr)
    losses, chosen_rewards, rejected_rewards = objectives.dpo_loss(
        pc, pr, rc, rr, beta=cfg.beta, loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing
    )
    w = batch["pair_weights"].astype(jnp.float32)
    loss_sum = jnp.sum(w * losses)
    metrics = _weighted_pair_metrics(w, chosen_rewards, rejected_rewards, pc, pr)
    metrics["loss"] = loss_sum
    return LossOutput(loss_sum, w.sum(), metrics)


def orpo_loss(model, batch, ref_model=None, *, cfg: ConfigDict) -> LossOutput:
    """ORPO: NLL of the chosen sequence + λ·odds-ratio loss, per pair.

    The NLL is the per-token mean over prompt + response by default (TRL and the released
    Janus+ORPO), or over the response only (`orpo.nll_on_prompt=False`). It is averaged per pair,
    so that accumulation stays exact; TRL averages it over all tokens of the batch instead.
    """
    del ref_model
    ((sc, sr), (nc, nr)), ((full_c, _), (full_n, _)) = _pair_response_and_full_logps(model, batch)
    mc, mr = objectives.mean_logps(sc, nc), objectives.mean_logps(sr, nr)
    nll = -objectives.mean_logps(full_c, full_n) if cfg.nll_on_prompt else -mc
    losses, _ = objectives.orpo_loss(mc, mr, nll, lam=cfg.lam)
    w = batch["pair_weights"].astype(jnp.float32)
    loss_sum = jnp.sum(w * losses)
    # Per-pair log-odds, so that metrics average exactly over pairs and micro-batches.
    z = (mc - mr) - (objectives._log1mexp(mc) - objectives._log1mexp(mr))
    metrics = _weighted_pair_metrics(w, cfg.lam * mc, cfg.lam * mr, mc, mr)
    metrics.update(
        loss=loss_sum,
        nll_loss=jnp.sum(w * nll),
        log_odds_ratio=jnp.sum(w * jax.nn.log_sigmoid(z)),
        log_odds_chosen=jnp.sum(w * z),
    )
    metrics = {k: jax.lax.stop_gradient(v) if k != "loss" else v for k, v in metrics.items()}
    return LossOutput(loss_sum, w.sum(), metrics)


def rm_loss(model, batch, ref_model=None) -> LossOutput:
    """Bradley-Terry on the scalar rewards of chosen and rejected responses."""
    del ref_model
    rewards = model(
        _both_sides(batch, "input_ids"),
        _both_sides(batch, "positions"),
        _both_sides(batch, "segment_ids"),
        _both_sides(batch, "lengths"),
    )
    b = batch["chosen_input_ids"].shape[0]
    rc, rr = rewards[:b], rewards[b:]
    w = batch["pair_weights"].astype(jnp.float32)
    loss_sum = jnp.sum(w * objectives.bradley_terry_loss(rc, rr))
    return LossOutput(
        loss_sum,
        w.sum(),
        {
            "loss": loss_sum,
            "rewards/chosen": jnp.sum(w * rc),
            "rewards/rejected": jnp.sum(w * rr),
            "rewards/margins": jnp.sum(w * (rc - rr)),
            "rewards/accuracies": jnp.sum(w * (rc > rr)),
        },
    )


def _count_positive(batch: dict[str, np.ndarray], suffix: str) -> int:
    return int(sum((value > 0).sum() for key, value in batch.items() if key.endswith(suffix)))


def real_tokens(batch: dict[str, np.ndarray]) -> int:
    """Non-padding tokens in a host-local batch (both sides of preference pairs)."""
    return _count_positive(batch, "segment_ids")


def head_positions(objective: str, batch: dict[str, np.ndarray]) -> int:
    """Positions at which the objective runs the LM head in a host-local batch (for FLOP counts):
    the loss-weighted ones for SFT and DPO, every real token for ORPO, none for the reward model."""
    if objective == "rm":
        return 0
    return real_tokens(batch) if objective == "orpo" else _count_positive(batch, "loss_weights")


def get_objective(cfg: ConfigDict):
    """The loss plug-in named by `cfg.objective`, with its section of the config bound."""
    name = cfg.objective
    if name == "sft":
        return sft_loss
    if name == "dpo":
        return functools.partial(dpo_loss, cfg=cfg.dpo)
    if name == "orpo":
        return functools.partial(orpo_loss, cfg=cfg.orpo)
    if name == "rm":
        return rm_loss
    raise ValueError(f"objective={name!r}; expected one of sft, dpo, orpo, rm")
