"""Log-probabilities of target tokens straight from the final hidden states, with a hand-written gradient.

Why: the LM head and its softmax are most of a small model's training step and a large share of a big
one's activation memory. Differentiating ``log_softmax(h @ W)[target]`` automatically keeps the
``[B, T, V]`` float32 logits alive until the backward pass and routes the target's gradient through a
scatter into a second logits-sized buffer. Here the forward pass keeps only the log-normaliser
(``[B, T]``); the backward pass recomputes the logits (one more matmul) and forms their gradient in a
single elementwise pass, ``g · (onehot(target) − softmax)``, which feeds the two gradient matmuls.

The target logit is picked with a compare-and-sum over the vocabulary rather than a gather, so a
vocabulary sharded over the ``tensor`` mesh axis needs one all-reduce of ``[B, T]`` values and no
all-gather of logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from janus_jax.sharding import constrain_batch


def _logits(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
    """``[B, T, V]`` float32 logits (float32 accumulation whatever the compute dtype)."""
    logits = jnp.einsum("btd,dv->btv", hidden, kernel, preferred_element_type=jnp.float32)
    return constrain_batch(logits, None, "tensor")


def _is_target(logits: jax.Array, targets: jax.Array) -> jax.Array:
    vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
    return vocab_ids == targets[..., None]


def _forward(hidden: jax.Array, kernel: jax.Array, targets: jax.Array):
    logits = _logits(hidden, kernel)
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.sum(jnp.where(_is_target(logits, targets), logits, 0.0), axis=-1)
    in_vocab = (targets >= 0) & (targets < kernel.shape[1])
    # An id outside the vocabulary matches no logit; NaN makes that visible in the loss.
    logps = jnp.where(in_vocab, picked - log_normaliser, jnp.nan)
    return logps, (hidden, kernel, targets, log_normaliser)


@jax.custom_vjp
def target_logps(hidden: jax.Array, kernel: jax.Array, targets: jax.Array) -> jax.Array:
    """``log softmax(hidden @ kernel)[target]`` per position, ``[B, T]`` float32.

    ``hidden`` is ``[B, T, D]`` and ``kernel`` ``[D, V]``, both in the compute dtype; ``targets`` is
    ``[B, T]`` int and already aligned (position t scores the token at t + 1). Ids outside ``[0, V)``
    give NaN.
    """
    return _forward(hidden, kernel, targets)[0]


def _backward(residuals, grad: jax.Array):
    hidden, kernel, targets, log_normaliser = residuals
    logits = _logits(hidden, kernel)
    probs = jnp.exp(logits - log_normaliser[..., None])
    dlogits = grad[..., None] * (_is_target(logits, targets).astype(jnp.float32) - probs)
    dlogits = jax.lax.optimization_barrier(constrain_batch(dlogits.astype(hidden.dtype), None, "tensor"))
    dhidden = jnp.einsum("btv,dv->btd", dlogits, kernel, preferred_element_type=jnp.float32)
    dkernel = jnp.einsum("btd,btv->dv", hidden, dlogits, preferred_element_type=jnp.float32)
    return dhidden.astype(hidden.dtype), dkernel.astype(kernel.dtype), None


target_logps.defvjp(_forward, _backward)
