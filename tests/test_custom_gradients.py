"""The hand-written gradients (LM head, attention, linear layers) equal autodiff of the plain formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax.model import attention as attn
from janus_jax.model.dense import dense_dot_general
from janus_jax.model.lm_head import chunk_len, target_logps


def token_logps(logits, targets):
    """The plain formula: log_softmax gathered at the targets."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]


def _close(ours, want, tol):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(want)):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(a, b, atol=tol * max(1.0, np.abs(b).max()), rtol=0)


def _jit_grad(f, n_args):
    """Gradients in one compiled program: op-by-op (eager) differentiation compiles every primitive apart,
    which made these tiny checks take minutes on a cold compilation cache."""
    return jax.jit(jax.grad(f, argnums=tuple(range(n_args))))


def _head_inputs(dtype=jnp.float32, shape=(3, 10)):
    kh, kw, kt, kg = jax.random.split(jax.random.key(0), 4)
    hidden = jax.random.normal(kh, (*shape, 16), dtype)
    kernel = (0.5 * jax.random.normal(kw, (16, 50))).astype(dtype)
    targets = jax.random.randint(kt, shape, 0, 50)
    cotangent = jax.random.normal(kg, shape)
    return hidden, kernel, targets, cotangent


def _check_head(hidden, kernel, targets, cotangent, scored):
    def reference(h, w):
        return jnp.where(scored, token_logps(jnp.einsum("btd,dv->btv", h, w), targets), 0.0)

    ours_fn = jax.jit(target_logps)
    np.testing.assert_allclose(ours_fn(hidden, kernel, targets, scored), jax.jit(reference)(hidden, kernel), atol=1e-5)
    ours = _jit_grad(lambda h, w: jnp.sum(cotangent * ours_fn(h, w, targets, scored)), 2)(hidden, kernel)
    want = _jit_grad(lambda h, w: jnp.sum(cotangent * reference(h, w)), 2)(hidden, kernel)
    _close(ours, want, 1e-5)


def test_lm_head_values_and_gradients_match_log_softmax():
    hidden, kernel, targets, cotangent = _head_inputs()
    _check_head(hidden, kernel, targets, cotangent, jnp.ones(targets.shape, bool))


@pytest.mark.parametrize("pattern", ["scattered", "short", "none"])
def test_lm_head_scores_only_the_scored_positions_over_several_chunks(pattern):
    # 384 positions make three chunks of 128. Row 0 scores scattered positions (all three chunks run),
    # row 1 a late block, row 2 nothing; "short" scores at most 128 per row (one chunk runs).
    assert chunk_len(384) == 128
    hidden, kernel, targets, cotangent = _head_inputs(shape=(3, 384))
    rng = np.random.default_rng(0)
    scored = np.zeros((3, 384), bool)
    if pattern == "scattered":
        scored[0] = rng.random(384) < 0.6
        scored[1, 200:330] = True
    elif pattern == "short":
        scored[0, rng.choice(384, 128, replace=False)] = True
        scored[1, 300:] = True
    _check_head(hidden, kernel, targets, cotangent, jnp.asarray(scored))


def test_lm_head_chunk_lengths():
    assert [chunk_len(t) for t in (10, 128, 256, 384, 512, 1000, 8192)] == [10, 128, 128, 128, 128, 200, 1024]


def test_lm_head_bf16_inputs_follow_float32_and_bad_ids_give_nan():
    hidden, kernel, targets, _ = _head_inputs(jnp.bfloat16)
    scored = jnp.ones(targets.shape, bool)
    head = jax.jit(target_logps)
    ours = head(hidden, kernel, targets, scored)
    logits = jnp.einsum("btd,dv->btv", hidden.astype(jnp.float32), kernel.astype(jnp.float32))
    want = jax.jit(token_logps)(logits, targets)
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(ours, want, atol=1e-4)
    grads = _jit_grad(lambda h, w: head(h, w, targets, scored).sum(), 2)(hidden, kernel)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
    bad = targets.at[0, 0].set(50).at[1, 1].set(-1)
    out = np.asarray(head(hidden, kernel, bad, scored))
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 1]) and np.isfinite(np.delete(out.ravel(), [0, 11])).all()
    # An unscored position is 0 whatever its id.
    assert head(hidden, kernel, bad, scored.at[0, 0].set(False))[0, 0] == 0


def _plain_attention(q, k, v, mask):
    """Softmax attention written out with GQA by repetition, differentiated by JAX; a query that may
    attend to no key (padding) gets a zero output."""
    group = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    scores = jnp.where(mask[:, None], scores, attn._MASKED)
    probs = jnp.where(mask.any(-1)[:, None, :, None], jax.nn.softmax(scores, axis=-1), 0.0)
    return jnp.einsum("bhts,bshd->bthd", probs, v)


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize(
    "causal_blocks", [1, 3, pytest.param(14, marks=pytest.mark.slow)]  # uneven blocks; one token per block (slow)
)
def test_attention_gradients_match_autodiff_on_packed_rows_with_padding(window, causal_blocks):
    # Row 0: two documents and two padding tokens; row 1: one document. 6 query heads on 2 KV heads.
    segment_ids = jnp.array([[1] * 7 + [2] * 5 + [0] * 2, [1] * 14])
    positions = jnp.array([list(range(7)) + list(range(5)) + [0, 0], list(range(14))])
    mask = attn.attention_mask(positions, positions, segment_ids, segment_ids, window)
    kq, kk, kv, kg = jax.random.split(jax.random.key(1), 4)
    q = jax.random.normal(kq, (2, 14, 6, 8))
    k, v = jax.random.normal(kk, (2, 14, 2, 8)), jax.random.normal(kv, (2, 14, 2, 8))
    cotangent = jax.random.normal(kg, q.shape) * (segment_ids > 0)[:, :, None, None]

    ours_fn = jax.jit(lambda *a: attn.xla_attention(*a, mask, causal_blocks, window))
    np.testing.assert_allclose(ours_fn(q, k, v), jax.jit(_plain_attention)(q, k, v, mask), atol=1e-5)
    ours = _jit_grad(lambda *a: jnp.sum(cotangent * ours_fn(*a)), 3)(q, k, v)
    want = _jit_grad(lambda *a: jnp.sum(cotangent * _plain_attention(*a, mask)), 3)(q, k, v)
    _close(ours, want, 1e-5)


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_causal_blocks_mask_keys_after_the_query_index_and_need_square_attention():
    """Blocking skips the keys after each block, so the blocked path is causal by index by definition."""
    kq, kk, kv = jax.random.split(jax.random.key(4), 3)
    q = jax.random.normal(kq, (1, 8, 2, 4))
    k, v = jax.random.normal(kk, (1, 8, 1, 4)), jax.random.normal(kv, (1, 8, 1, 4))
    everything = jnp.ones((1, 8, 8), bool)  # a mask that lets every query see every key
    causal = everything & jnp.tril(jnp.ones((8, 8), bool))
    for blocks in (2, 4):
        blocked = attn.xla_attention(q, k, v, everything, blocks)
        np.testing.assert_allclose(blocked, _plain_attention(q, k, v, causal), atol=1e-5)
    # With a window of 3 as well, blocks also skip the keys before their first query's window.
    banded = causal & ~jnp.tril(jnp.ones((8, 8), bool), -3)
    for blocks in (2, 4, 8):
        windowed = attn.xla_attention(q, k, v, everything, blocks, 3)
        np.testing.assert_allclose(windowed, _plain_attention(q, k, v, banded), atol=1e-5)
        grads = jax.grad(lambda *a, n=blocks: attn.xla_attention(*a, everything, n, 3).sum(), argnums=(0, 1, 2))
        want = jax.grad(lambda *a: _plain_attention(*a, banded).sum(), argnums=(0, 1, 2))
        _close(grads(q, k, v), want(q, k, v), 1e-5)
    with pytest.raises(ValueError, match="as many keys as queries"):
        attn.xla_attention(q[:, :3], k, v, everything[:, :3], 2)
    assert [attn.causal_blocks_for(n) for n in (64, 256, 512, 8192)] == [1, 2, 4, 8]


def test_attention_with_more_keys_than_queries_matches_autodiff():
    """The KV-cache shape: 3 new queries against 9 keys (old cache + new)."""
    kq, kk, kv = jax.random.split(jax.random.key(2), 3)
    q = jax.random.normal(kq, (2, 3, 4, 8))
    k, v = jax.random.normal(kk, (2, 9, 2, 8)), jax.random.normal(kv, (2, 9, 2, 8))
    positions = jnp.array([[6, 7, 8], [6, 7, 8]])
    kv_positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
    mask = attn.attention_mask(positions, kv_positions, jnp.ones((2, 3)), jnp.ones((2, 9)), None)
    np.testing.assert_allclose(jax.jit(attn.xla_attention)(q, k, v, mask), jax.jit(_plain_attention)(q, k, v, mask),
                               atol=1e-5)
    ours = _jit_grad(lambda *a: attn.xla_attention(*a, mask).sum(), 3)(q, k, v)
    want = _jit_grad(lambda *a: _plain_attention(*a, mask).sum(), 3)(q, k, v)
    _close(ours, want, 1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the custom linear-layer gradient is the CPU path")
@pytest.mark.parametrize("d_in,d_out", [(7, 3), (3, 7)])  # each operand of the weight gradient transposed once
def test_dense_gradients_match_dot_general(d_in, d_out):
    kx, kw, kg = jax.random.split(jax.random.key(3), 3)
    x, w = jax.random.normal(kx, (2, 5, d_in)), jax.random.normal(kw, (d_in, d_out))
    cotangent = jax.random.normal(kg, (2, 5, d_out))
    dims = (((2,), (0,)), ((), ()))

    def ours(x, w):
        return jnp.sum(cotangent * dense_dot_general(x, w, dims))

    def want(x, w):
        return jnp.sum(cotangent * jax.lax.dot_general(x, w, dims))

    np.testing.assert_allclose(dense_dot_general(x, w, dims), jax.lax.dot_general(x, w, dims), atol=1e-6)
    _close(_jit_grad(ours, 2)(x, w), _jit_grad(want, 2)(x, w), 1e-6)
    # Anything but the plain x[..., D] · W[D, F] product goes to lax.dot_general untouched.
    batched = (((2,), (1,)), ((0,), (0,)))
    y = jax.random.normal(kw, (2, d_in, 4))
    np.testing.assert_allclose(dense_dot_general(x, y, batched), jax.lax.dot_general(x, y, batched), atol=1e-6)
