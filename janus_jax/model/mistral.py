"""The Mistral decoder: embeddings, a scanned stack of decoder layers, final norm, untied LM head."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from janus_jax.model import lm_head
from janus_jax.model.config import MistralConfig
from janus_jax.model.layers import CacheWrite, DecoderLayer, RMSNorm, linear
from janus_jax.sharding import constrain_batch, embedding_lookup

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv": jax.checkpoint_policies.save_only_these_names("query", "key", "value"),
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Keys and values of every layer, and the position held by each slot (-1 = empty)."""

    k: jax.Array  # [L, B, S, KVH, D]
    v: jax.Array  # [L, B, S, KVH, D]
    positions: jax.Array  # [B, S] int32

    @property
    def length(self) -> int:
        return self.positions.shape[1]


def init_cache(cfg: MistralConfig, batch_size: int, max_length: int, dtype=jnp.float32) -> KVCache:
    """An empty cache of `max_length` slots per row.

    With a sliding window, `max_length` may be as small as the window: slots are reused as a ring.
    Without one, it must cover prompt + generated tokens.
    """
    if cfg.sliding_window is not None and max_length < cfg.sliding_window:
        max_length = cfg.sliding_window
    shape = (cfg.num_hidden_layers, batch_size, max_length, cfg.num_key_value_heads, cfg.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        positions=jnp.full((batch_size, max_length), -1, jnp.int32),
    )


class Mistral(nnx.Module):
    """Mistral causal LM. `model(input_ids)` returns float32 logits [B, T, V]."""

    def __init__(self, cfg: MistralConfig, *, rngs: nnx.Rngs):
        # Parameters carry logical axis names as metadata only; janus_jax.sharding maps them to a
        # mesh explicitly (so a parameter that matches no rule is an error, not a silent replica).
        with nnx.use_eager_sharding(False):
            self._build(cfg, rngs)

    def _build(self, cfg: MistralConfig, rngs: nnx.Rngs) -> None:
        self.config = cfg
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), ("vocab", "embed")),
            rngs=rngs,
        )

        @nnx.split_rngs(splits=cfg.num_hidden_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs: nnx.Rngs) -> DecoderLayer:
            return DecoderLayer(cfg, rngs=rngs)

        self.layers = make_layers(rngs)
        self.norm = RMSNorm(cfg, rngs=rngs)
        self.lm_head = linear(cfg, cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), rngs)

    def hidden_states(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Final-norm hidden states [B, T, D] (what the LM head and the reward head read)."""
        cfg = self.config
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
        if segment_ids is None:
            segment_ids = jnp.ones_like(input_ids, dtype=jnp.int32)
        positions = positions.astype(jnp.int32)
        segment_ids = segment_ids.astype(jnp.int32)
        x = embedding_lookup(self.embed_tokens.embedding[...].astype(jnp.dtype(cfg.dtype)), input_ids)

        graphdef, layer_state = nnx.split(self.layers)
        live = (segment_ids != 0).astype(jnp.int32)
        write = None if cache is None else CacheWrite.plan(cache.positions, positions, live)

        def block(x, xs):
            state, kv = xs
            layer = nnx.merge(graphdef, state)
            layer_cache = None if kv is None else (kv[0], kv[1], write)
            x, new_kv = layer(x, positions, segment_ids, layer_cache)
            return constrain_batch(x), new_kv

        if cfg.remat != "none":
            block = jax.checkpoint(block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)

        kv_in = None if cache is None else (cache.k, cache.v)
        if cfg.scan_layers:
            x, kv_out = jax.lax.scan(block, x, (layer_state, kv_in))
        else:
            outs = []
            for i in range(cfg.num_hidden_layers):
                x, kv_i = block(x, jax.tree.map(lambda a, i=i: a[i], (layer_state, kv_in)))
                outs.append(kv_i)
            kv_out = None if cache is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)

        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=kv_out[0], v=kv_out[1], positions=write.new_positions)
        return self.norm(x), new_cache

    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
    ):
        """Logits [B, T, V] in float32; with a cache, also the updated cache."""
        h, new_cache = self.hidden_states(input_ids, positions, segment_ids, cache)
        logits = constrain_batch(self.lm_head(h).astype(jnp.float32), None, "tensor")
        return logits if cache is None else (logits, new_cache)

    def target_logps(
        self,
        input_ids: jax.Array,
        targets: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        scored: jax.Array | None = None,
    ) -> jax.Array:
        """Log-prob of each target token, [B, T] float32: what every training objective needs.

        Same numbers as ``log_softmax(model(...))[targets]`` at the ``scored`` positions (all by
        default) and 0 elsewhere; the LM head runs only where some row still has scored positions and
        never holds more than one chunk of logits (janus_jax.model.lm_head).
        """
        h, _ = self.hidden_states(input_ids, positions, segment_ids)
        scored = jnp.ones(targets.shape, bool) if scored is None else scored
        kernel = self.lm_head.kernel[...].astype(h.dtype)
        return lm_head.target_logps(h, kernel, targets.astype(jnp.int32), scored)
