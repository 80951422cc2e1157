"""The in-place KV cache of generation (PerLayerMistral): decode steps run inside one jitted loop that carries
and donates the cache give the logits of a full forward pass at every step, through a sliding window's ring
buffer and with GQA; and the compiled decode loop copies no cache buffer."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from janus_jax.model import Mistral, MistralConfig, PerLayerMistral, init_cache
from janus_jax.sample import Sampler, SamplingParams

VOCAB = 256
STEPS = 14


@pytest.fixture(scope="module", params=[None, 8], ids=["full", "window8"])
def model(request):
    # 4 query heads over 2 KV heads (GQA); with a window of 8 the ring of 8 slots wraps twice.
    return Mistral(MistralConfig.tiny(vocab_size=VOCAB, sliding_window=request.param), rngs=nnx.Rngs(3))


def test_decode_loop_logits_equal_full_forward_at_every_step(model):
    rng = np.random.default_rng(0)
    lengths = [3, 6]
    seqs = rng.integers(3, VOCAB, size=(2, max(lengths) + STEPS))
    prompt = np.zeros((2, max(lengths)), np.int32)
    for i, n in enumerate(lengths):
        prompt[i, :n] = seqs[i, :n]
    positions = np.broadcast_to(np.arange(prompt.shape[1]), prompt.shape)
    segments = (positions < np.array(lengths)[:, None]).astype(np.int32)
    cache_length = 8 if model.config.sliding_window else prompt.shape[1] + STEPS
    graphdef, state = nnx.split(PerLayerMistral(model))

    @jax.jit
    def prefill(state, ids, positions, segments):
        cache = init_cache(model.config, batch_size=2, max_length=cache_length)
        return nnx.merge(graphdef, state)(ids, positions, segments, cache)[1]

    def decode(state, cache, tokens, start):  # tokens [2, STEPS], fed one per step from positions `start`
        def step(i, carry):
            cache, logits = carry
            token = jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1)
            out, cache = nnx.merge(graphdef, state)(token, start[:, None] + i, jnp.ones_like(token), cache)
            return cache, logits.at[:, i].set(out[:, 0])

        return jax.lax.fori_loop(0, STEPS, step, (cache, jnp.zeros((2, STEPS, VOCAB), jnp.float32)))

    decode = jax.jit(decode, donate_argnums=(1,))  # the cache buffers are updated in place
    cache = prefill(state, jnp.asarray(prompt), jnp.asarray(positions), jnp.asarray(segments))
    fed = np.stack([seqs[i, n : n + STEPS] for i, n in enumerate(lengths)])
    _, logits = decode(state, cache, jnp.asarray(fed, jnp.int32), jnp.asarray(lengths, jnp.int32))
    for i, n in enumerate(lengths):
        full = model(jnp.asarray(seqs[i : i + 1, : n + STEPS]))[0, n : n + STEPS]
        np.testing.assert_allclose(np.asarray(logits[i]), np.asarray(full), atol=1e-4, rtol=1e-4)


def test_per_layer_model_equals_the_models_own_cached_call(model):
    """`Mistral.__call__` with a cache and the Sampler's PerLayerMistral give the same logits and cache."""
    ids = jnp.asarray([[1, 9, 33, 4, 120, 7]], jnp.int32)
    cache = init_cache(model.config, batch_size=1, max_length=16)
    ours, ours_cache = PerLayerMistral(model)(ids, None, None, cache)
    theirs, theirs_cache = model(ids, cache=cache)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    for a, b in zip(jax.tree.leaves(ours_cache), jax.tree.leaves(theirs_cache), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_compiled_decode_loop_copies_no_cache_buffer(model):
    """The performance property itself: the decode while-loop updates each layer's cache buffer in place
    (before, XLA re-stacked and copied the whole cache at every step)."""
    from janus_jax import sample

    sampler = Sampler(model, eos_id=VOCAB + 1)
    batch, new_tokens = 4, 16
    _, _, _, cache_length = sampler.shapes([5], new_tokens, batch)
    rows = sampler._to_device(
        sample.row_params([SamplingParams(temperature=0.0, max_new_tokens=new_tokens)] * batch, VOCAB + 1, 8)
    )
    ids = jnp.ones((batch, 16), jnp.int32)
    kwargs = dict(pad_id=0, sharding=None)
    ds = sample._prefill_jit(
        sampler.graphdef, sampler.state, ids, jnp.full((batch,), 5, jnp.int32), rows,
        cache_length=cache_length, new_tokens=new_tokens, cache_dtype=jnp.float32, **kwargs,
    )  # fmt: skip
    hlo = sample._decode_jit.lower(sampler.graphdef, sampler.state, ds, rows, jnp.int32(new_tokens), **kwargs)
    text = hlo.compile().as_text()
    cfg = model.config
    layer_shape = f"[{batch},{cfg.num_key_value_heads},{cache_length},{cfg.head_dim}]"
    assert f"f32{layer_shape}" in text  # the cache is in the program, under the shape looked for
    copies = re.findall(r"= f32(\[[0-9,]*\])\{[0-9,]*\} copy\(", text)
    assert layer_shape not in copies, f"the decode loop copies a layer's cache: {copies}"
