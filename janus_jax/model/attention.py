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


def _to_groups(x: jax.Array, kv_heads: int) -> jax.Array:
    """[B, T, H, D] -> [B, K, G*T, D]: each KV head's G query heads stacked along the time axis."""
    b, t, h, d = x.shape
    x = x.reshape(b, t, kv_heads, h // kv_heads, d).transpose(0, 2, 3, 1, 4)
    return x.reshape(b, kv_heads, (h // kv_heads) * t, d)


def _from_groups(x: jax.Array, t: int) -> jax.Array:
    """Inverse of `_to_groups`: [B, K, G*T, D] -> [B, T, K*G, D]."""
    b, kv_heads, gt, d = x.shape
    x = x.reshape(b, kv_heads, gt // t, t, d).transpose(0, 3, 1, 2, 4)
    return x.reshape(b, t, kv_heads * (gt // t), d)


def _masked_scores(q_groups: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled float32 scores [B, K, G*T, S] of grouped queries against k [B, S, K, D], masked."""
    b, kv_heads, gt, d = q_groups.shape
    t = mask.shape[1]
    scores = jnp.einsum("bkqd,bskd->bkqs", q_groups, k, preferred_element_type=jnp.float32) * (d**-0.5)
    scores = jnp.where(mask[:, None, None], scores.reshape(b, kv_heads, gt // t, t, -1), _MASKED)
    return scores.reshape(b, kv_heads, gt, -1)


def _attention_forward(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array):
    q_groups = _to_groups(q, k.shape[2])
    scores = _masked_scores(q_groups, k, mask)
    row_max, row_sum = _softmax_stats(scores)
    probs = (jnp.exp(scores - row_max) * (1.0 / row_sum)).astype(v.dtype)
    out = jnp.einsum("bkqs,bskd->bkqd", probs, v, preferred_element_type=jnp.float32).astype(q.dtype)
    return _from_groups(out, q.shape[1]), (q_groups, k, v, mask, out, row_max, row_sum)


def _softmax_stats(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Row max and Σ exp(s − max). Kept apart rather than folded into one log-normaliser, whose
    max + log(sum) would round back to the max on fully masked (padding) rows and unnormalise them."""
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    return row_max, jnp.sum(jnp.exp(scores - row_max), axis=-1, keepdims=True)


@jax.custom_vjp
def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Reference path. q [B,T,H,D], k/v [B,S,K,D] with H a multiple of K (GQA), mask [B,T,S].

    Softmax in float32. The gradient is written by hand, as flash attention's is: the forward pass
    keeps only its output and the softmax row statistics, and the backward pass recomputes the
    probabilities from q and k. Autodiff would keep the [B, H, T, S] probabilities of every layer
    until the backward pass instead, and on CPU it spends much of the step transposing them.
    """
    return _attention_forward(q, k, v, mask)[0]


def _attention_backward(residuals, d_out: jax.Array):
    q_groups, k, v, mask, out, row_max, row_sum = residuals
    d = q_groups.shape[-1]
    d_out_groups = _to_groups(d_out, k.shape[2])
    probs = jnp.exp(_masked_scores(q_groups, k, mask) - row_max) * (1.0 / row_sum)
    dv = jnp.einsum("bkqs,bkqd->bskd", probs.astype(v.dtype), d_out_groups, preferred_element_type=jnp.float32)
    d_probs = jnp.einsum("bkqd,bskd->bkqs", d_out_groups, v, preferred_element_type=jnp.float32)
    # Softmax backward: dS = P * (dP - rowsum(dO * O)).
    row_dot = jnp.sum(d_out_groups.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    d_scores = (probs * (d_probs - row_dot) * (d**-0.5)).astype(q_groups.dtype)
    dq = jnp.einsum("bkqs,bskd->bkqd", d_scores, k, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bkqs,bkqd->bskd", d_scores, q_groups, preferred_element_type=jnp.float32)
    t = mask.shape[1]
    return _from_groups(dq.astype(q_groups.dtype), t), dk.astype(k.dtype), dv.astype(v.dtype), None


xla_attention.defvjp(_attention_forward, _attention_backward)


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
