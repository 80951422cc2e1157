"""One attention function, a reference XLA path and a fused cuDNN path behind it.

Masks are built from positions and segment ids rather than from array indices, so the same code
serves packed training rows (several documents per row), KV-cache decoding (keys from earlier
calls) and sliding windows. Segment id 0 marks padding / empty cache slots.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(
    q_positions: jax.Array,
    kv_positions: jax.Array,
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    sliding_window: int | None,
) -> jax.Array:
    """[B, T, S] bool: same non-padding segment, causal by position, inside the window."""
    qp, kp = q_positions[:, :, None], kv_positions[:, None, :]
    mask = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (kv_segment_ids[:, None, :] != 0)
    mask &= kp <= qp
    if sliding_window is not None:
        mask &= qp - kp < sliding_window
    return mask


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Reference path. q [B,T,H,D], k/v [B,S,K,D] with H a multiple of K (GQA), mask [B,T,S]."""
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * (d**-0.5)
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h, d).astype(q.dtype)


def cudnn_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, sliding_window: int | None
) -> jax.Array:
    """Fused cuDNN flash attention for full sequences (no cache): causal by index, segments as a mask.

    Valid when positions restart with each segment and grow by one inside it, which the data
    pipeline guarantees; `tests/test_attention.py` checks it against the reference on packed rows.
    """
    same_segment = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    window = None if sliding_window is None else (sliding_window - 1, 0)
    return jax.nn.dot_product_attention(
        q, k, v, mask=same_segment, is_causal=True, local_window_size=window, implementation="cudnn"
    )


def resolve_impl(impl: str) -> str:
    if impl != "auto":
        return impl
    return "cudnn" if jax.default_backend() == "gpu" else "xla"
