"""The attention paths agree with a plain NumPy reference, and the fused path with the XLA one on packed rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax.model import attention as attn


def _packed_inputs(b=2, t=64, heads=4, kv_heads=2, d=16, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, t, heads, d)).astype(np.float32)
    k = rng.standard_normal((b, t, kv_heads, d)).astype(np.float32)
    v = rng.standard_normal((b, t, kv_heads, d)).astype(np.float32)
    segments = np.zeros((b, t), np.int32)
    positions = np.zeros((b, t), np.int32)
    cuts = [(0, 20, 1), (20, 50, 2), (50, 60, 3)]  # last 4 tokens of each row are padding
    for start, end, seg in cuts:
        segments[:, start:end] = seg
        positions[:, start:end] = np.arange(end - start)
    return (jnp.asarray(x, dtype) for x in (q, k, v)), jnp.asarray(segments), jnp.asarray(positions)


def _numpy_attention(q, k, v, segments, positions, window):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            kh = hi // group
            for i in range(t):
                ok = [
                    j
                    for j in range(t)
                    if segments[bi, j] == segments[bi, i] != 0
                    and positions[bi, j] <= positions[bi, i]
                    and (window is None or positions[bi, i] - positions[bi, j] < window)
                ]
                if not ok:
                    continue
                s = q[bi, i, hi] @ k[bi, ok, kh].T / np.sqrt(d)
                p = np.exp(s - s.max())
                out[bi, i, hi] = (p / p.sum()) @ v[bi, ok, kh]
    return out


@pytest.mark.parametrize("window", [None, 8])
def test_xla_path_matches_numpy(window):
    (q, k, v), segments, positions = _packed_inputs()
    mask = attn.attention_mask(positions, positions, segments, segments, window)
    with jax.default_matmul_precision("highest"):  # GPUs default to TF32/bf16 matmuls
        ours = np.asarray(attn.xla_attention(q, k, v, mask))
    want = _numpy_attention(q, k, v, np.asarray(segments), np.asarray(positions), window)
    real = np.asarray(segments) != 0
    np.testing.assert_allclose(ours[real], want[real], atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
@pytest.mark.parametrize("window", [None, 8])
def test_cudnn_matches_xla_on_packed_rows(window):
    """The known bug class: a fused kernel that ignores segment ids. Forward and gradients, bf16."""
    (q, k, v), segments, positions = _packed_inputs(b=2, t=256, heads=8, kv_heads=2, d=64, dtype=jnp.bfloat16)
    real = np.asarray(segments) != 0

    def xla(q, k, v):
        mask = attn.attention_mask(positions, positions, segments, segments, window)
        return attn.xla_attention(q, k, v, mask)

    def cudnn(q, k, v):
        return attn.cudnn_attention(q, k, v, segments, window)

    out_x, out_c = jax.jit(xla)(q, k, v), jax.jit(cudnn)(q, k, v)
    np.testing.assert_allclose(
        np.asarray(out_c, np.float32)[real], np.asarray(out_x, np.float32)[real], atol=2e-2, rtol=2e-2
    )
    weights = jnp.asarray(real, jnp.bfloat16)[:, :, None, None]
    grad = lambda f: jax.jit(jax.grad(lambda *a: (f(*a) * weights).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    for gx, gc in zip(grad(xla)(q, k, v), grad(cudnn)(q, k, v)):
        np.testing.assert_allclose(np.asarray(gc, np.float32), np.asarray(gx, np.float32), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("dtype, window, tolerance", [(jnp.float32, 8, 1e-5), (jnp.bfloat16, None, 3e-2)])
def test_splash_matches_xla_on_packed_rows_in_interpret_mode(dtype, window, tolerance):
    """TPU splash attention, run by Pallas's interpreter on CPU devices inside the same shard_map the train
    step uses (rows over fsdp, heads over tensor): forward and gradients equal the XLA path on packed rows
    with GQA (4 query heads per key head) and a sliding window."""
    from janus_jax.sharding import make_mesh

    (q, k, v), segments, positions = _packed_inputs(b=2, t=128, heads=8, kv_heads=2, d=64, dtype=dtype)
    real = np.asarray(segments) != 0
    mesh = make_mesh((1, 2, 2), jax.devices()[:4])

    def xla(q, k, v):
        return attn.self_attention(q, k, v, positions, segments, window, "xla")

    def splash(q, k, v):
        return attn.splash_attention(q, k, v, segments, window, mesh=mesh)

    out_x, out_s = jax.jit(xla)(q, k, v), jax.jit(splash)(q, k, v)
    np.testing.assert_allclose(np.asarray(out_s, np.float32), np.asarray(out_x, np.float32), atol=tolerance)
    weights = jnp.asarray(real, dtype)[:, :, None, None]
    grad = lambda f: jax.jit(jax.grad(lambda *a: (f(*a) * weights).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    for gx, gs in zip(grad(xla)(q, k, v), grad(splash)(q, k, v)):
        scale = float(np.max(np.abs(np.asarray(gx, np.float32))))
        np.testing.assert_allclose(np.asarray(gs, np.float32), np.asarray(gx, np.float32), atol=tolerance * scale)


def test_auto_picks_the_platform_kernel():
    assert [attn.resolve_impl("auto", p) for p in ("tpu", "gpu", "cpu")] == ["splash", "cudnn", "xla"]
    assert attn.resolve_impl("xla", "tpu") == "xla"
    with pytest.raises(ValueError, match="multiple of 128, got 200"):
        attn._splash_block(200)
