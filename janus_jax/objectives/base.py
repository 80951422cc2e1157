"""What an objective is (one record), and the forward passes the objectives share.

An objective turns (model, micro-batch, reference model) into a summed loss, the weight it is averaged
over (tokens for SFT, pairs for the preference objectives) and summed metrics. Summing over
micro-batches and dividing once makes gradient accumulation exact: 4 micro-batches of 8 equal one batch
of 32. Filler pairs that complete an epoch's last batch carry `pair_weights = 0`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from janus_jax.model import Mistral, MistralConfig
from janus_jax.objectives.formulas import masked_sums

Batch = dict[str, jax.Array]


class LossOutput(NamedTuple):
    loss_sum: jax.Array  # summed over the micro-batch
    weight: jax.Array  # what loss_sum and metric sums are divided by
    metric_sums: dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Objective:
    """One training objective, as the trainer, janus-plan and the benchmark see it.

    loss: ``loss(model, batch, ref_model, section) -> LossOutput``; ``section`` is the run config's
      section named ``config_section`` (e.g. ``cfg.dpo``), or None.
    pairs: batches of (chosen, rejected) pairs rather than packed SFT rows.
    head_positions: how many positions of a host-local batch the LM head scores (for FLOP counts).
    build_model: the network the objective trains (the causal LM, or the reward model).
    needs_reference: a frozen reference policy takes part (evaluated in the step, or precomputed).
    """

    name: str
    loss: Callable[..., LossOutput]
    pairs: bool
    head_positions: Callable[[dict[str, np.ndarray]], int]
    build_model: Callable[[MistralConfig, nnx.Rngs], nnx.Module] = Mistral
    needs_reference: bool = False
    config_section: str | None = None

    def bound_loss(self, cfg: ConfigDict) -> Callable[[Any, Batch, Any], LossOutput]:
        """``loss(model, batch, ref_model)`` with the run's section of the config bound."""
        section = cfg[self.config_section] if self.config_section else None
        return functools.partial(_call_loss, self.loss, section)


def _call_loss(loss, section, model, batch, ref_model=None) -> LossOutput:
    return loss(model, batch, ref_model, section)


# ---- host-side counts (numpy, per host-local batch) --------------------------------------------------


def _count_positive(batch: dict[str, np.ndarray], suffix: str) -> int:
    return int(sum((value > 0).sum() for key, value in batch.items() if key.endswith(suffix)))


def real_tokens(batch: dict[str, np.ndarray]) -> int:
    """Non-padding tokens in a host-local batch (both sides of preference pairs)."""
    return _count_positive(batch, "segment_ids")


def loss_weighted_tokens(batch: dict[str, np.ndarray]) -> int:
    """Positions with a loss weight (response tokens and EOS), both sides of pairs."""
    return _count_positive(batch, "loss_weights")


# ---- forward passes ----------------------------------------------------------------------------------


def target_logps(model, batch: Batch, scored: jax.Array) -> jax.Array:
    """Per-token log-probs [B, T] of the batch's targets at `scored` positions, 0 elsewhere."""
    targets = jnp.where(scored, batch["targets"], 0)
    return model.target_logps(batch["input_ids"], targets, batch["positions"], batch["segment_ids"], scored)


def both_sides(batch: Batch, key: str) -> jax.Array:
    """[chosen; rejected] rows of one key, for one forward pass over both sides."""
    return jnp.concatenate([batch[f"chosen_{key}"], batch[f"rejected_{key}"]], axis=0)


def stacked_pairs(batch: Batch) -> Batch:
    keys = ("input_ids", "targets", "positions", "segment_ids", "loss_weights")
    return {key: both_sides(batch, key) for key in keys}


def pair_logps(model, batch: Batch, *, full_sequence: bool = False):
    """One forward over [chosen; rejected]: summed log-probs and token counts over the responses, each
    [2, B]; with `full_sequence`, also over every real token (prompt + response), from the same pass."""
    rows = stacked_pairs(batch)
    response = rows["loss_weights"] > 0
    real = rows["segment_ids"] > 0
    per_token = target_logps(model, rows, real if full_sequence else response)
    b = batch["chosen_input_ids"].shape[0]

    def sums(mask):
        summed, counts = masked_sums(per_token, mask)
        return summed.reshape(2, b), counts.reshape(2, b)

    return (sums(response), sums(real)) if full_sequence else sums(response)


def pair_weights(batch: Batch) -> jax.Array:
    return batch["pair_weights"].astype(jnp.float32)


def weighted_pair_metrics(w, chosen_rewards, rejected_rewards, chosen_logps=None, rejected_logps=None) -> dict:
    """Sums (to be divided by Σw) of TRL's metrics; accuracies count strict wins, as TRL does."""
    metrics = {
        "rewards/chosen": jnp.sum(w * chosen_rewards),
        "rewards/rejected": jnp.sum(w * rejected_rewards),
        "rewards/margins": jnp.sum(w * (chosen_rewards - rejected_rewards)),
        "rewards/accuracies": jnp.sum(w * (chosen_rewards > rejected_rewards)),
    }
    if chosen_logps is not None:
        metrics["logps/chosen"] = jnp.sum(w * chosen_logps)
        metrics["logps/rejected"] = jnp.sum(w * rejected_logps)
    return {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}


def weighted_pair_loss(
    batch: Batch, losses, chosen_rewards, rejected_rewards, chosen_logps=None, rejected_logps=None
) -> LossOutput:
    """Per-pair losses summed with the pairs' weights (filler pairs weigh 0), with TRL's pair metrics."""
    w = pair_weights(batch)
    loss_sum = jnp.sum(w * losses)
    metrics = weighted_pair_metrics(w, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps)
    return LossOutput(loss_sum, w.sum(), {"loss": loss_sum, **metrics})
