"""DPO against a frozen reference policy (evaluated in the step) or precomputed reference log-probs."""

from __future__ import annotations

import jax
from ml_collections import ConfigDict

from janus_jax.objectives.base import (
    Batch,
    LossOutput,
    Objective,
    loss_weighted_tokens,
    pair_logps,
    weighted_pair_loss,
)
from janus_jax.objectives.formulas import dpo_loss as dpo_formula
from janus_jax.objectives.formulas import mean_logps


def dpo_loss(model, batch: Batch, ref_model, section: ConfigDict) -> LossOutput:
    """`ref_model` is the frozen policy (`dpo.reference=model`); None reads `ref_*_logps` from the batch."""
    (pc, pr), (nc, nr) = pair_logps(model, batch)
    if ref_model is not None:
        (rc, rr), _ = pair_logps(ref_model, batch)
        rc, rr = jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)
    else:
        rc, rr = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    if section.loss_type == "ipo":  # TRL length-normalises IPO
        pc, pr = mean_logps(pc, nc), mean_logps(pr, nr)
        rc, rr = mean_logps(rc, nc), mean_logps(rr, nr)
    losses, chosen_rewards, rejected_rewards = dpo_formula(
        pc, pr, rc, rr, beta=section.beta, loss_type=section.loss_type, label_smoothing=section.label_smoothing
    )
    return weighted_pair_loss(batch, losses, chosen_rewards, rejected_rewards, pc, pr)


OBJECTIVE = Objective(
    name="dpo",
    loss=dpo_loss,
    pairs=True,
    head_positions=loss_weighted_tokens,
    needs_reference=True,
    config_section="dpo",
)
