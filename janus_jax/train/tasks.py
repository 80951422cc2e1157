"""Training objectives as plug-ins of the one trainer.

An objective turns (model, micro-batch) into a summed loss, the weight it is averaged over
(tokens for SFT, pairs for preference objectives) and summed metrics. Summing over micro-batches
and dividing once makes gradient accumulation exact: 4 micro-batches of 8 equal one batch of 32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from janus_jax import objectives


class LossOutput(NamedTuple):
    loss_sum: jax.Array  # summed over the micro-batch
    weight: jax.Array  # what loss_sum and metric sums are divided by
    metric_sums: dict[str, jax.Array]


def sft_loss(model, batch: dict[str, jax.Array], ref_model=None) -> LossOutput:
    """Token-level NLL on response tokens (and EOS) only."""
    del ref_model
    logits = model(batch["input_ids"], positions=batch["positions"], segment_ids=batch["segment_ids"])
    weights = batch["loss_weights"].astype(jnp.float32)
    nll = -objectives.token_logps(logits, batch["targets"]) * weights
    loss_sum = nll.sum()
    return LossOutput(loss_sum, weights.sum(), {"loss": loss_sum})


OBJECTIVES = {"sft": sft_loss}


def get_objective(name: str):
    if name not in OBJECTIVES:
        raise ValueError(f"objective={name!r}; expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]
