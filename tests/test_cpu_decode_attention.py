"""The CPU decode-attention kernel: same numbers as the XLA path, used by decoding on CPU, and a missing or
broken compiler leaves decoding on the XLA path with a warning that says why."""

import logging
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from janus_jax.model import Mistral, MistralConfig, init_cache
from janus_jax.model import attention as attn
from janus_jax.model import cpu_decode_attention as kernel
from janus_jax.sample import GREEDY, Sampler
from janus_jax.sharding import make_mesh


@pytest.fixture
def fresh_registration():
    """Let a test decide afresh whether the kernel builds; the next caller decides again after it."""
    kernel._registered.cache_clear()
    yield
    kernel._registered.cache_clear()


def _inputs(b, kv_heads, groups, slots, d, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, kv_heads, groups, d)).astype(np.float32)
    k = rng.standard_normal((b, kv_heads, slots, d)).astype(np.float32)
    v = rng.standard_normal((b, kv_heads, slots, d)).astype(np.float32)
    mask = rng.random((b, slots)) < 0.6
    mask[0] = False  # a row that may read nothing (padding): zeros on both paths
    if b > 1:
        mask[-1] = np.arange(slots) == slots // 2  # a single readable slot: its value, exactly
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)


def test_the_kernel_builds_here():
    assert kernel.enabled(), "the CPU decode-attention kernel did not build; see the warning above"


@pytest.mark.parametrize(
    "b, kv_heads, groups, slots, d",
    [(3, 2, 3, 37, 32), (1, 1, 1, 5, 8), (2, 4, 1, 64, 128), (16, 2, 3, 160, 64)],
)
def test_kernel_matches_the_xla_path(b, kv_heads, groups, slots, d):
    q, k, v, mask = _inputs(b, kv_heads, groups, slots, d)
    ours = np.asarray(jax.jit(kernel.decode_attention)(q, k, v, mask))
    reference = np.asarray(jax.jit(attn.xla_cached_attention)(q, k, v, mask))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[0], 0.0)
    if b > 1:
        np.testing.assert_allclose(ours[-1], np.broadcast_to(v[-1, :, None, slots // 2], ours[-1].shape), rtol=1e-6)


def _tiny_model(vocab_size: int) -> Mistral:
    cfg = MistralConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, dtype="float32")  # fmt: skip
    return Mistral(cfg, rngs=nnx.Rngs(0))


def _decode_step_hlo(cache_dtype=jnp.float32) -> str:
    model = _tiny_model(64)
    cache = init_cache(model.config, batch_size=2, max_length=8, dtype=cache_dtype)
    step = jax.jit(lambda ids: model(ids, cache=cache)[0])  # a new jit: traced afresh under the current settings
    return step.lower(jnp.ones((2, 1), jnp.int32)).as_text()


def test_a_float32_cache_decode_step_calls_the_kernel_and_the_switch_turns_it_off(monkeypatch):
    assert kernel.TARGET in _decode_step_hlo()
    assert kernel.TARGET not in _decode_step_hlo(jnp.bfloat16)  # a bfloat16 cache stays on the XLA path
    monkeypatch.setenv(kernel.SWITCH, "0")
    assert kernel.TARGET not in _decode_step_hlo()


def test_a_missing_compiler_leaves_decoding_on_the_xla_path(monkeypatch, tmp_path, caplog, fresh_registration):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(kernel.CACHE_ENV, str(tmp_path / "kernels"))
    with caplog.at_level(logging.WARNING, logger=kernel.__name__):
        assert not kernel.enabled()
    assert "no-such-compiler" in caplog.text and "XLA path" in caplog.text
    assert kernel.TARGET not in _decode_step_hlo()


def test_a_failing_compiler_is_reported_with_its_output(tmp_path):
    cxx = tmp_path / "cxx"
    cxx.write_text("#!/bin/sh\necho 'decode_attention.cc:1: error: something is wrong' >&2\nexit 3\n")
    cxx.chmod(cxx.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(kernel.KernelBuildError, match=r"exited 3:\n.*something is wrong"):
        kernel.build(tmp_path / "kernels", str(cxx))
    assert not list((tmp_path / "kernels").glob("*.so"))  # no half-written library left behind


def test_a_built_kernel_is_reused_without_compiling(monkeypatch):
    library = kernel.build()

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(kernel.subprocess, "run", no_compiler)
    assert kernel.build() == library


def test_decoding_on_a_mesh_of_several_devices_stays_on_xla_ops(monkeypatch):
    """The kernel is one custom call that XLA's partitioner cannot split (it would gather every operand onto
    each device), so sharded decode programs are traced on XLA's ops; unsharded ones call the kernel."""
    traced, call_kernel = [], kernel.decode_attention
    monkeypatch.setattr(kernel, "decode_attention", lambda *args: traced.append(1) or call_kernel(*args))
    model = _tiny_model(96)  # a vocabulary of its own: traced afresh in this process
    eos = model.config.vocab_size + 1
    prompts = [[1, 5, 6], [1, 7], [1, 8, 9, 10], [1, 11]]
    sharded = Sampler(model, eos_id=eos, mesh=make_mesh((2, 2, 2))).generate(prompts, GREEDY)
    assert not traced
    plain = Sampler(model, eos_id=eos).generate(prompts, GREEDY)
    assert traced
    assert [c.token_ids for c in sharded] == [c.token_ids for c in plain]

