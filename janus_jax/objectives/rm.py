"""The Bradley-Terry reward model: a scalar head on the last real token, no LM head."""

from __future__ import annotations

from janus_jax.model.reward import RewardModel
from janus_jax.objectives.base import Batch, LossOutput, Objective, both_sides, weighted_pair_loss
from janus_jax.objectives.formulas import bradley_terry_loss


def rm_loss(model, batch: Batch, ref_model=None, section=None) -> LossOutput:
    del ref_model, section
    rewards = model(
        both_sides(batch, "input_ids"),
        both_sides(batch, "positions"),
        both_sides(batch, "segment_ids"),
        both_sides(batch, "lengths"),
    )
    b = batch["chosen_input_ids"].shape[0]
    rc, rr = rewards[:b], rewards[b:]
    return weighted_pair_loss(batch, bradley_terry_loss(rc, rr), rc, rr)


OBJECTIVE = Objective(
    name="rm", loss=rm_loss, pairs=True, head_positions=lambda batch: 0, build_model=RewardModel
)
