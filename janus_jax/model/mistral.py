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
    """Keys and values of every layer, and the position held by each slot (-1 = empty).

    One buffer per layer, head-major: a decode step writes each layer's new keys into that layer's own
    buffer in place (no stacking, no copy of the rest), and attention reads each (row, KV head) block of
    keys as one contiguous [S, D] matrix.
    """

    k: tuple[jax.Array, ...]  # per layer [B, KVH, S, D]
    v: tuple[jax.Array, ...]  # per layer [B, KVH, S, D]
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
    shape = (batch_size, cfg.num_key_value_heads, max_length, cfg.head_dim)
    layers = range(cfg.num_hidden_layers)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in layers),
        v=tuple(jnp.zeros(shape, dtype) for _ in layers),
        positions=jnp.full((batch_size, max_length), -1, jnp.int32),
    )


def _inputs(
    cfg: MistralConfig,
    embed: nnx.Embed,
    input_ids: jax.Array,
    positions: jax.Array | None,
    segment_ids: jax.Array | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Embedded tokens, int32 positions (default 0..T-1) and segment ids (default all 1)."""
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
    if segment_ids is None:
        segment_ids = jnp.ones_like(input_ids, dtype=jnp.int32)
    x = embedding_lookup(embed.embedding[...].astype(jnp.dtype(cfg.dtype)), input_ids)
    return x, positions.astype(jnp.int32), segment_ids.astype(jnp.int32)


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
        """Final-norm hidden states [B, T, D] (what the LM head and the reward head read); with a cache,
        also the updated cache (computed by `PerLayerMistral`, the form generation uses)."""
        cfg = self.config
        if cache is not None:
            return PerLayerMistral(self).hidden_states(input_ids, positions, segment_ids, cache)
        x, positions, segment_ids = _inputs(cfg, self.embed_tokens, input_ids, positions, segment_ids)
        graphdef, layer_state = nnx.split(self.layers)

        def block(x, state):
            layer = nnx.merge(graphdef, state)
            x, _ = layer(x, positions, segment_ids, None)
            return constrain_batch(x), None

        if cfg.remat != "none":
            block = jax.checkpoint(block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)

        if cfg.scan_layers:
            x, _ = jax.lax.scan(block, x, layer_state)
        else:
            for i in range(cfg.num_hidden_layers):
                x, _ = block(x, jax.tree.map(lambda a, i=i: a[i], layer_state))
        return self.norm(x), None

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


class PerLayerMistral(nnx.Module):
    """The same Mistral with one module (and weight arrays) per layer, for generation with a KV cache.

    Why: training scans over the layers' stacked weights, and inside a decode step XLA:CPU copies each
    layer's weights out of the stack before its matmuls, which read them once more (the scanned decode
    step also re-stacked the whole cache). Here the layers run one after the other on weights that are
    arrays of their own, each writing its own cache buffer in place. Built from a Mistral, it shares the
    embedding, final norm and LM head and holds a copy of the layer weights (`Sampler` builds one; the
    model itself is unchanged).
    """

    def __init__(self, model: Mistral):
        self.config = model.config
        self.embed_tokens = model.embed_tokens
        graphdef, state = nnx.split(model.layers)
        self.layers = nnx.List(
            nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(model.config.num_hidden_layers)
        )
        self.norm = model.norm
        self.lm_head = model.lm_head

    def hidden_states(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None,
        segment_ids: jax.Array | None,
        cache: KVCache,
    ) -> tuple[jax.Array, KVCache]:
        """Final-norm hidden states [B, T, D] of the call's tokens and the cache with them written in."""
        x, positions, segment_ids = _inputs(self.config, self.embed_tokens, input_ids, positions, segment_ids)
        write = CacheWrite.plan(cache.positions, positions, (segment_ids != 0).astype(jnp.int32))
        keys, values = [], []
        for layer, k, v in zip(self.layers, cache.k, cache.v, strict=True):
            x, (k, v) = layer(x, positions, segment_ids, (k, v, write))
            x = constrain_batch(x)
            keys.append(k)
            values.append(v)
        return self.norm(x), KVCache(k=tuple(keys), v=tuple(values), positions=write.new_positions)

    def __call__(
        self, input_ids: jax.Array, positions: jax.Array | None, segment_ids: jax.Array | None, cache: KVCache
    ) -> tuple[jax.Array, KVCache]:
        """Logits [B, T, V] in float32 and the updated cache."""
        h, new_cache = self.hidden_states(input_ids, positions, segment_ids, cache)
        return constrain_batch(self.lm_head(h).astype(jnp.float32), None, "tensor"), new_cache
