"""Mistral building blocks in Flax NNX, named like HF's modules so weights map 1:1."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from janus_jax.model import attention as attn
from janus_jax.model.config import MistralConfig
from janus_jax.model.dense import dense_dot_general

_INIT = nnx.initializers.normal(stddev=0.02)


def linear(cfg: MistralConfig, d_in: int, d_out: int, axes: tuple[str, str], rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=False,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=nnx.with_partitioning(_INIT, axes),
        dot_general=dense_dot_general,
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """RMSNorm computed in float32, scaled in the compute dtype (as HF does)."""

    def __init__(self, cfg: MistralConfig, *, rngs: nnx.Rngs):
        del rngs
        self.eps = cfg.rms_norm_eps
        self.dtype = jnp.dtype(cfg.dtype)
        self.weight = nnx.Param(jnp.ones((cfg.hidden_size,), jnp.dtype(cfg.param_dtype)), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(self.dtype) * x32.astype(self.dtype)


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Split-half ("rotate_half") RoPE on x [B, T, heads, D] at integer positions [B, T]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: MistralConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        q_dim = cfg.num_attention_heads * cfg.head_dim
        kv_dim = cfg.num_key_value_heads * cfg.head_dim
        self.q_proj = linear(cfg, cfg.hidden_size, q_dim, ("embed", "heads"), rngs)
        self.k_proj = linear(cfg, cfg.hidden_size, kv_dim, ("embed", "kv_heads"), rngs)
        self.v_proj = linear(cfg, cfg.hidden_size, kv_dim, ("embed", "kv_heads"), rngs)
        self.o_proj = linear(cfg, q_dim, cfg.hidden_size, ("heads", "embed"), rngs)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        cache: tuple[jax.Array, jax.Array, CacheWrite] | None,
    ):
        """Attention output [B, T, hidden] and, with a cache (this layer's keys and values [B, KVH, S, D] and
        where the call's tokens go), that cache with the call's keys and values written in."""
        cfg = self.cfg
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, cfg.num_attention_heads, cfg.head_dim)
        k = self.k_proj(x).reshape(b, t, cfg.num_key_value_heads, cfg.head_dim)
        v = self.v_proj(x).reshape(b, t, cfg.num_key_value_heads, cfg.head_dim)
        q = checkpoint_name(rotary(q, positions, cfg.rope_theta), "query")
        k = checkpoint_name(rotary(k, positions, cfg.rope_theta), "key")
        v = checkpoint_name(v, "value")

        new_cache = None
        if cache is None:
            out = attn.self_attention(q, k, v, positions, segment_ids, cfg.sliding_window, cfg.attention_impl)
        else:
            cache_k, cache_v, write = cache
            live = (segment_ids != 0).astype(jnp.int32)
            new_cache = (write.cache(cache_k, k), write.cache(cache_v, v))
            if t == 1:
                # One token per row (decoding): its slot held a position at least one window back, so writing
                # first and attending over the cache alone is exact, and the cache is read where it lies.
                kv_pos = write.new_positions
                mask = attn.attention_mask(positions, kv_pos, live, (kv_pos >= 0).astype(jnp.int32), cfg.sliding_window)
                out = attn.cached_attention(q.astype(cache_k.dtype), *new_cache, mask[:, 0]).astype(x.dtype)
            else:
                # Several tokens (prefill): a ring buffer may overwrite keys that earlier tokens of this
                # same call still need, so attend over the old cache plus the new keys.
                kv_k = jnp.concatenate([time_major(cache_k), k.astype(cache_k.dtype)], axis=1)
                kv_v = jnp.concatenate([time_major(cache_v), v.astype(cache_v.dtype)], axis=1)
                kv_pos = jnp.concatenate([write.old_positions, positions], axis=1)
                kv_seg = jnp.concatenate([(write.old_positions >= 0).astype(jnp.int32), live], axis=1)
                mask = attn.attention_mask(positions, kv_pos, live, kv_seg, cfg.sliding_window)
                out = attn.xla_attention(q.astype(kv_k.dtype), kv_k, kv_v, mask).astype(x.dtype)
        out = out.reshape(b, t, cfg.num_attention_heads * cfg.head_dim)
        return self.o_proj(out), new_cache


def cache_slots(positions: jax.Array, live: jax.Array, cache_len: int) -> jax.Array:
    """Slot of each new token in a ring of `cache_len`; dropped (= cache_len) for padding and for
    tokens that a later token of the same call would overwrite."""
    last = jnp.max(jnp.where(live > 0, positions, -1), axis=1, keepdims=True)
    keep = (live > 0) & (positions > last - cache_len)
    return jnp.where(keep, positions % cache_len, cache_len)


class CacheWrite(NamedTuple):
    """Where one call's tokens go in the cache: computed once per call, shared by every layer."""

    old_positions: jax.Array  # [B, S] slot -> position before the call (-1 = empty)
    new_positions: jax.Array  # [B, S] after it
    slots: jax.Array  # [B, T] slot of each new token (S = not written)

    @classmethod
    def plan(cls, cache_pos: jax.Array, positions: jax.Array, live: jax.Array) -> CacheWrite:
        slots = cache_slots(positions, live, cache_pos.shape[1])
        rows = jnp.arange(cache_pos.shape[0])[:, None]
        return cls(cache_pos, cache_pos.at[rows, slots].set(positions, mode="drop"), slots)

    def cache(self, cache: jax.Array, new: jax.Array) -> jax.Array:
        """One layer's cache [B, KVH, S, D] with the call's keys or values [B, T, KVH, D] written into their
        slots: a scatter of T rows per row and head, in place when the cache buffer is donated or carried."""
        rows = jnp.arange(cache.shape[0])[:, None]
        return cache.at[rows, :, self.slots].set(new.astype(cache.dtype), mode="drop")


def time_major(cache: jax.Array) -> jax.Array:
    """A layer's cache [B, KVH, S, D] as [B, S, KVH, D], the layout of keys computed in the call."""
    return cache.transpose(0, 2, 1, 3)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: MistralConfig, *, rngs: nnx.Rngs):
        self.gate_proj = linear(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs)
        self.up_proj = linear(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs)
        self.down_proj = linear(cfg, cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: MistralConfig, *, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg, rngs=rngs)
        self.self_attn = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, positions, segment_ids, cache=None):
        h, new_cache = self.self_attn(self.input_layernorm(x), positions, segment_ids, cache)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, new_cache
