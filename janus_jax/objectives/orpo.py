"""ORPO: NLL of the chosen sequence + λ·odds-ratio loss, per pair, no reference model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from janus_jax.objectives.base import (
    Batch,
    LossOutput,
    Objective,
    pair_logps,
    pair_weights,
    real_tokens,
    weighted_pair_metrics,
)
from janus_jax.objectives.formulas import mean_logps
from janus_jax.objectives.formulas import orpo_loss as orpo_formula


def orpo_loss(model, batch: Batch, ref_model, section: ConfigDict) -> LossOutput:
    """The NLL is the per-token mean over prompt + response by default (TRL and the released Janus+ORPO),
    or over the response only (`orpo.nll_on_prompt=False`). It is averaged per pair, so that
    accumulation stays exact; TRL averages it over all tokens of the batch instead.
    """
    del ref_model
    ((sc, sr), (nc, nr)), ((full_c, _), (full_n, _)) = pair_logps(model, batch, full_sequence=True)
    mc, mr = mean_logps(sc, nc), mean_logps(sr, nr)
    nll = -mean_logps(full_c, full_n) if section.nll_on_prompt else -mc
    losses, log_odds = orpo_formula(mc, mr, nll, lam=section.lam)
    w = pair_weights(batch)
    loss_sum = jnp.sum(w * losses)
    metrics = weighted_pair_metrics(w, section.lam * mc, section.lam * mr, mc, mr)
    metrics.update(
        nll_loss=jax.lax.stop_gradient(jnp.sum(w * nll)),
        log_odds_ratio=jax.lax.stop_gradient(jnp.sum(w * jax.nn.log_sigmoid(log_odds))),
        log_odds_chosen=jax.lax.stop_gradient(jnp.sum(w * log_odds)),
        loss=loss_sum,
    )
    return LossOutput(loss_sum, w.sum(), metrics)


OBJECTIVE = Objective(name="orpo", loss=orpo_loss, pairs=True, head_positions=real_tokens, config_section="orpo")
