"""Supervised fine-tuning: token-level NLL on response tokens (and EOS) only."""

from __future__ import annotations

import jax.numpy as jnp

from janus_jax.objectives.base import Batch, LossOutput, Objective, loss_weighted_tokens, target_logps
from janus_jax.objectives.formulas import masked_sums


def sft_loss(model, batch: Batch, ref_model=None, section=None) -> LossOutput:
    del ref_model, section
    weights = batch["loss_weights"].astype(jnp.float32)
    scored = weights > 0
    summed, _ = masked_sums(target_logps(model, batch, scored), scored)
    loss_sum = -summed.sum()
    return LossOutput(loss_sum, weights.sum(), {"loss": loss_sum})


OBJECTIVE = Objective(name="sft", loss=sft_loss, pairs=False, head_positions=loss_weighted_tokens)
