"""The matmul of every linear layer, with a weight gradient that XLA:CPU runs at matmul speed.

Why: a weight gradient contracts over the token axis, ``dW = xᵀ · g``. XLA:CPU's layout assignment
serves that contraction by transposing the larger operand (the ``[tokens, 4·hidden]`` activation
gradient of the MLP) inside the elementwise fusion that produces it, and such transposing fusions
took about a third of a small model's CPU training step. On CPU, the backward pass here transposes
the narrower operand itself, behind an optimisation barrier so that the transpose stays a plain copy,
and every gradient matmul becomes an ordinary ``[M, K] · [K, N]`` product.

Other backends take ``lax.dot_general`` unchanged, so GPU/TPU programs, and the remat policies that
look for dot products in them, are what they would be without this module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.einsum("...d,df->...f", x, w)


def _materialised_transpose(x: jax.Array) -> jax.Array:
    return jax.lax.optimization_barrier(x.T)


def _weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """``xᵀ · g`` for x [M, D] and g [M, F], transposing whichever of the two is narrower."""
    if x.shape[1] <= g.shape[1]:
        return jnp.matmul(_materialised_transpose(x), g, preferred_element_type=jnp.float32)
    return jnp.matmul(_materialised_transpose(g), x, preferred_element_type=jnp.float32).T


@jax.custom_vjp
def _cpu_dense(x: jax.Array, w: jax.Array) -> jax.Array:
    return _matmul(x, w)


def _cpu_dense_forward(x: jax.Array, w: jax.Array):
    return _matmul(x, w), (x, w)


def _cpu_dense_backward(residuals, g: jax.Array):
    x, w = residuals
    dx = jnp.einsum("...f,df->...d", g, w, preferred_element_type=jnp.float32).astype(x.dtype)
    dw = _weight_grad(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]))
    return dx, dw.astype(w.dtype)


_cpu_dense.defvjp(_cpu_dense_forward, _cpu_dense_backward)


def dense_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None, **kwargs) -> jax.Array:
    """A drop-in ``dot_general`` for ``nnx.Linear``: ``x[..., D] · W[D, F]``.

    On CPU (and with no output sharding or dtype requested) it routes through the custom gradient
    above; everything else goes to ``lax.dot_general`` as is.
    """
    contracting = dimension_numbers[0]
    standard = tuple(contracting[0]) == (lhs.ndim - 1,) and tuple(contracting[1]) == (0,) and rhs.ndim == 2
    plain = kwargs.get("out_sharding") is None and kwargs.get("preferred_element_type") is None
    if jax.default_backend() == "cpu" and standard and plain and precision is None and not dimension_numbers[1][0]:
        return _cpu_dense(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, **kwargs)
