"""Fails loudly when the pinned JAX stack changes: versions, one sharded step, one save + restore."""

import re
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from janus_jax.model import Mistral, MistralConfig
from janus_jax.sharding import make_mesh, state_shardings
from janus_jax.train.checkpoint import abstract_with_shardings

PINNED = {"jax": jax, "flax": flax, "optax": optax, "orbax-checkpoint": ocp}


def test_versions_match_setup_py():
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    for name, module in PINNED.items():
        pinned = re.search(rf'"{name}==([\d.]+)"', setup).group(1)
        assert module.__version__ == pinned, f"{name} {module.__version__} installed, setup.py pins {pinned}"


def test_sharded_step_then_restore_on_another_mesh(tmp_path):
    cfg = MistralConfig.tiny(vocab_size=128)
    mesh_a, mesh_b = make_mesh((1, 8, 1)), make_mesh((2, 2, 2))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Mistral(cfg, rngs=nnx.Rngs(0))))
    sh_a = state_shardings(abstract, mesh_a)
    params = jax.jit(lambda: nnx.state(Mistral(cfg, rngs=nnx.Rngs(0))), out_shardings=sh_a)()
    ids = jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % cfg.vocab_size

    @jax.jit
    def step(p):
        loss, grads = jax.value_and_grad(lambda p: nnx.merge(graphdef, p)(ids).mean())(p)
        return jax.tree.map(lambda w, g: w - 0.1 * g, p, grads), loss

    params, loss = step(params)
    assert np.isfinite(float(loss))
    assert params["lm_head"]["kernel"][...].sharding.spec in (
        jax.sharding.PartitionSpec("fsdp"),
        jax.sharding.PartitionSpec("fsdp", None),
    )

    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "ckpt", params)
    sh_b = state_shardings(abstract, mesh_b)
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(tmp_path / "ckpt", abstract_with_shardings(abstract, sh_b))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert restored["layers"]["mlp"]["up_proj"]["kernel"][...].sharding.spec == jax.sharding.PartitionSpec(
        None, "fsdp", "tensor"
    )
