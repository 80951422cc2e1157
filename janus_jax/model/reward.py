"""The Bradley-Terry reward model: the Mistral backbone plus a scalar head on the last real token."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from janus_jax.model.config import MistralConfig
from janus_jax.model.mistral import Mistral


def score_head(cfg: MistralConfig, rngs: nnx.Rngs) -> nnx.Linear:
    """The scalar head: hidden state of the last real token -> reward (float32)."""
    with nnx.use_eager_sharding(False):
        return nnx.Linear(
            cfg.hidden_size,
            1,
            use_bias=False,
            dtype=jnp.float32,
            param_dtype=jnp.dtype(cfg.param_dtype),
            kernel_init=nnx.with_partitioning(nnx.initializers.normal(1.0 / (cfg.hidden_size + 1)), ("embed", None)),
            rngs=rngs,
        )


class RewardModel(nnx.Module):
    """`rm(input_ids, positions, segment_ids, lengths)` -> one float32 reward per row.

    `lengths` counts the real input tokens of each row; the head reads the hidden state of the last
    one (the end of the response), as OpenRLHF's reward models read their last non-pad token.
    """

    def __init__(self, cfg: MistralConfig, *, rngs: nnx.Rngs):
        self.model = Mistral(cfg, rngs=rngs)
        self.score = score_head(cfg, rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        lengths: jax.Array | None = None,
    ) -> jax.Array:
        hidden, _ = self.model.hidden_states(input_ids, positions, segment_ids)
        if lengths is None:
            lengths = jnp.full((input_ids.shape[0],), input_ids.shape[1], jnp.int32)
        last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None].astype(jnp.int32), axis=1)[:, 0]
        return self.score(last.astype(jnp.float32))[:, 0]
