"""The jitted train and eval steps: pure functions over (graphdef, state), explicit shardings.

value_and_grad -> token-weighted accumulation over micro-batches (lax.scan) -> global-norm clip
-> optax update -> metrics. The state is donated, so a 7B step holds one copy of the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from janus_jax.objectives import LossOutput
from janus_jax.sharding import BATCH_AXES, activation_sharding

TrainState = dict[str, Any]  # {"params": nnx.State, "opt_state": optax state, "step": int32 scalar}


def _split_micro_batches(batch: dict[str, jax.Array], accum: int, mesh: Mesh) -> dict[str, jax.Array]:
    """[B, ...] -> [accum, B/accum, ...] keeping each micro-batch spread over the batch axes."""

    def split(x):
        b = x.shape[0]
        if b % accum:
            raise ValueError(f"batch of {b} rows does not split into {accum} micro-batches")
        x = x.reshape(b // accum, accum, *x.shape[1:]).swapaxes(0, 1)
        spec = PartitionSpec(None, BATCH_AXES, *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(split, batch)


def _accumulate(loss_fn, params, batch, accum: int, mesh: Mesh):
    """Sum losses, weights, metric sums and gradients over micro-batches."""

    def micro(p, mb):
        out: LossOutput = loss_fn(p, mb)
        return out.loss_sum, out

    grad_fn = jax.value_and_grad(micro, has_aux=True)
    if accum == 1:
        (_, out), grads = grad_fn(params, batch)
        return out, grads

    micro_batches = _split_micro_batches(batch, accum, mesh)

    def body(carry, mb):
        (_, out), grads = grad_fn(params, mb)
        return jax.tree.map(jnp.add, carry, (out, grads)), None

    zero_out = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro_batches)))
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zero_out[0][1], zero_out[1]))
    (out, grads), _ = jax.lax.scan(body, init, micro_batches)
    return out, grads


def make_train_step(
    graphdef: nnx.GraphDef,
    objective: Callable,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accum: int,
    mesh: Mesh,
    ref_graphdef: nnx.GraphDef | None = None,
) -> Callable:
    """Returns step(state, batch, ref_params) -> (state, metrics)."""

    def step(state: TrainState, batch: dict[str, jax.Array], ref_params=None):
        with activation_sharding(mesh):
            return _step(state, batch, ref_params)

    def _step(state: TrainState, batch: dict[str, jax.Array], ref_params=None):
        ref_model = None
        if ref_params is not None:
            ref_model = nnx.merge(ref_graphdef, jax.lax.stop_gradient(ref_params))

        def loss_fn(params, mb):
            return objective(nnx.merge(graphdef, params), mb, ref_model)

        out, grad_sums = _accumulate(loss_fn, state["params"], batch, accum, mesh)
        weight = jnp.maximum(out.weight, 1.0)
        grads = jax.tree.map(lambda g: g / weight, grad_sums)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {k: v / weight for k, v in out.metric_sums.items()}
        metrics.update(grad_norm=grad_norm, learning_rate=schedule(state["step"]), loss_weight=out.weight)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    return step


def make_eval_step(
    graphdef: nnx.GraphDef, objective: Callable, mesh: Mesh | None = None, ref_graphdef: nnx.GraphDef | None = None
) -> Callable:
    """Returns eval(params, batch, ref_params) -> (loss_sum, weight, metric_sums) for exact averaging."""

    def evaluate(params, batch, ref_params=None):
        with activation_sharding(mesh):
            ref_model = None if ref_params is None else nnx.merge(ref_graphdef, ref_params)
            out = objective(nnx.merge(graphdef, params), batch, ref_model)
            return out.loss_sum, out.weight, out.metric_sums

    return evaluate


def train_state_shardings(state_shapes: TrainState, param_shardings, tx: optax.GradientTransformation, mesh: Mesh):
    """Optimizer moments take their parameter's sharding; counters and scalars are replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    opt = optax.tree_utils.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        state_shapes["opt_state"],
        param_shardings,
        transform_non_params=lambda _: replicated,
    )
    return {"params": param_shardings, "opt_state": opt, "step": replicated}
