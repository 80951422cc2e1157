"""SimPO (Meng et al. 2024): length-normalised policy log-probs as the reward, a target margin γ, no reference."""

from __future__ import annotations

from ml_collections import ConfigDict

from janus_jax.objectives.base import (
    Batch,
    LossOutput,
    Objective,
    loss_weighted_tokens,
    pair_logps,
    weighted_pair_loss,
)
from janus_jax.objectives.formulas import mean_logps
from janus_jax.objectives.formulas import simpo_loss as simpo_formula


def simpo_loss(model, batch: Batch, ref_model, section: ConfigDict) -> LossOutput:
    del ref_model
    (sc, sr), (nc, nr) = pair_logps(model, batch)
    mc, mr = mean_logps(sc, nc), mean_logps(sr, nr)
    losses, chosen_rewards, rejected_rewards = simpo_formula(
        mc, mr, beta=section.beta, gamma=section.gamma, label_smoothing=section.label_smoothing
    )
    return weighted_pair_loss(batch, losses, chosen_rewards, rejected_rewards, mc, mr)


OBJECTIVE = Objective(
    name="simpo", loss=simpo_loss, pairs=True, head_positions=loss_weighted_tokens, config_section="simpo"
)
