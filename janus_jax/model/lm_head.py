"""Log-probabilities of target tokens straight from the final hidden states, for scored positions only.

Why: the LM head and its softmax are most of a small model's training step and a large share of a big
one's activation memory, yet objectives score only some positions (SFT the response, DPO both
responses). Differentiating ``log_softmax(h @ W)[target]`` automatically computes logits for every
position, keeps the ``[B, T, V]`` float32 logits alive until the backward pass and routes the target's
gradient through a scatter into a second logits-sized buffer.

Here each row's scored positions are first gathered to its front (order kept), and the head runs over
chunks of ``chunk_len(T)`` positions only while some row still has scored positions left: a batch whose
rows score half their tokens pays for half the head. No more than one chunk's logits exist at a time.
The forward pass keeps only the log-normaliser per position; the backward pass recomputes each chunk's
logits (one more matmul) and forms their gradient in one elementwise pass,
``g · (onehot(target) − softmax)``, which feeds the two gradient matmuls.

The target logit is picked with a compare-and-sum over the vocabulary rather than a gather, so a
vocabulary sharded over the ``tensor`` mesh axis needs one all-reduce of ``[B, chunk]`` values and no
all-gather of logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from janus_jax.sharding import constrain_batch

_MIN_CHUNK = 128  # positions; shorter chunks make the head's matmuls too thin to run at full speed
_MAX_CHUNKS = 8


def chunk_len(seq_len: int) -> int:
    """Positions per head chunk: the largest ``seq_len / n`` (n ≤ 8) that is whole and ≥ 128, else ``seq_len``."""
    for n in range(_MAX_CHUNKS, 1, -1):
        if seq_len % n == 0 and seq_len // n >= _MIN_CHUNK:
            return seq_len // n
    return seq_len


def _logits(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    """``[B, T, V]`` float32 logits (float32 accumulation whatever the compute dtype)."""
    logits = jnp.einsum("btd,dv->btv", hidden, kernel, preferred_element_type=jnp.float32)
    return constrain_batch(logits, None, "tensor")


def _is_target(logits: jax.Array, targets: jax.Array) -> jax.Array:
    vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
    return vocab_ids == targets[..., None]


class _Packed:
    """Each row's scored positions moved to its front, and how many chunks cover them."""

    def __init__(self, scored: jax.Array, size: int):
        self.order = jnp.argsort(~scored, axis=1, stable=True)  # scored positions first, in order
        self.size = size
        most = jnp.max(jnp.sum(scored, axis=1, dtype=jnp.int32))
        self.chunks = (most + size - 1) // size

    def gather(self, x: jax.Array) -> jax.Array:
        index = self.order.reshape(self.order.shape + (1,) * (x.ndim - 2))
        return jnp.take_along_axis(x, index, axis=1)

    def scatter(self, x: jax.Array) -> jax.Array:
        """Inverse of `gather`."""
        inverse = jnp.argsort(self.order, axis=1)
        return jnp.take_along_axis(x, inverse.reshape(inverse.shape + (1,) * (x.ndim - 2)), axis=1)

    def chunk(self, x: jax.Array, j: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice_in_dim(x, j * self.size, self.size, axis=1)

    def put(self, x: jax.Array, j: jax.Array, value: jax.Array) -> jax.Array:
        return jax.lax.dynamic_update_slice_in_dim(x, value.astype(x.dtype), j * self.size, axis=1)


def _forward(hidden: jax.Array, kernel: jax.Array, targets: jax.Array, scored: jax.Array):
    packed = _Packed(scored, chunk_len(hidden.shape[1]))
    hidden_p, targets_p = packed.gather(hidden), packed.gather(targets)

    def chunk_stats(j, carry):
        picked, log_normaliser = carry
        logits = _logits(packed.chunk(hidden_p, j), kernel)
        target = _is_target(logits, packed.chunk(targets_p, j))
        picked = packed.put(picked, j, jnp.sum(jnp.where(target, logits, 0.0), axis=-1))
        return picked, packed.put(log_normaliser, j, jax.nn.logsumexp(logits, axis=-1))

    zeros = jnp.zeros(targets.shape, jnp.float32)
    picked, log_normaliser = jax.lax.fori_loop(0, packed.chunks, chunk_stats, (zeros, zeros))
    in_vocab = (targets >= 0) & (targets < kernel.shape[1])
    # An id outside the vocabulary matches no logit; NaN makes that visible in the loss.
    logps = jnp.where(in_vocab, packed.scatter(picked - log_normaliser), jnp.nan)
    logps = jnp.where(scored, logps, 0.0)
    return logps, (hidden_p, kernel, targets_p, log_normaliser, scored)


@jax.custom_vjp
def target_logps(hidden: jax.Array, kernel: jax.Array, targets: jax.Array, scored: jax.Array) -> jax.Array:
    """``log softmax(hidden @ kernel)[target]`` at scored positions, 0 elsewhere; ``[B, T]`` float32.

    ``hidden`` is ``[B, T, D]`` and ``kernel`` ``[D, V]``, both in the compute dtype; ``targets`` is
    ``[B, T]`` int and already aligned (position t scores the token at t + 1); ``scored`` is ``[B, T]``
    bool. Scored ids outside ``[0, V)`` give NaN.
    """
    return _forward(hidden, kernel, targets, scored)[0]


def _backward(residuals, grad: jax.Array):
    hidden_p, kernel, targets_p, log_normaliser, scored = residuals
    packed = _Packed(scored, chunk_len(hidden_p.shape[1]))
    grad_p = packed.gather(jnp.where(scored, grad, 0.0))

    def chunk_grads(j, carry):
        dhidden_p, dkernel = carry
        hidden = packed.chunk(hidden_p, j)
        logits = _logits(hidden, kernel)
        probs = jnp.exp(logits - packed.chunk(log_normaliser, j)[..., None])
        onehot = _is_target(logits, packed.chunk(targets_p, j)).astype(jnp.float32)
        dlogits = packed.chunk(grad_p, j)[..., None] * (onehot - probs)
        dlogits = jax.lax.optimization_barrier(constrain_batch(dlogits.astype(hidden.dtype), None, "tensor"))
        dhidden = jnp.einsum("btv,dv->btd", dlogits, kernel, preferred_element_type=jnp.float32)
        dkernel = dkernel + jnp.einsum("btd,btv->dv", hidden, dlogits, preferred_element_type=jnp.float32)
        return packed.put(dhidden_p, j, dhidden), dkernel

    init = (jnp.zeros(hidden_p.shape, jnp.float32), jnp.zeros(kernel.shape, jnp.float32))
    dhidden_p, dkernel = jax.lax.fori_loop(0, packed.chunks, chunk_grads, init)
    return packed.scatter(dhidden_p).astype(hidden_p.dtype), dkernel.astype(kernel.dtype), None, None


target_logps.defvjp(_forward, _backward)
