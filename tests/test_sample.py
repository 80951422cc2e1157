"""Sampler: the sampling math against HF's logits processors, cached decoding against full forward
passes, per-row parameters without recompiles, stop handling, sharding, and HF greedy parity."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from janus_jax.model import Mistral, MistralConfig, init_cache
from janus_jax.sample import (
    GREEDY,
    GenerationJit,
    Sampler,
    SamplingParams,
    apply_repetition_penalty,
    bucket,
    filter_top_k_top_p,
    first_argmax,
    log_normalizer,
    row_params,
    sample_tokens,
    stop_string_holdback,
)

VOCAB = 512


@pytest.fixture(scope="module")
def model():
    return Mistral(MistralConfig.tiny(vocab_size=VOCAB), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def window_model():
    return Mistral(MistralConfig.tiny(vocab_size=VOCAB, sliding_window=8), rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def sampler(model):
    return Sampler(model, eos_id=VOCAB + 1)  # an EOS that never occurs: budgets are exact


_FORWARDS = {}


def full_logits(model, ids, pad_to=64):
    """Logits [len(ids), V] of one uncached forward pass (padded at the end, which causality ignores)."""
    if id(model) not in _FORWARDS:
        graphdef, state = nnx.split(model)
        _FORWARDS[id(model)] = (jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)), state)
    fn, state = _FORWARDS[id(model)]
    padded = np.zeros((1, pad_to), np.int32)
    padded[0, : len(ids)] = ids
    return np.asarray(fn(state, jnp.asarray(padded))[0, : len(ids)])


def greedy_reference(model, prompt, n):
    """Greedy decoding the slow way: a full forward pass over the whole sequence for every token."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(np.argmax(full_logits(model, ids)[-1])))
    return ids[len(prompt) :]


# ---- sampling math ------------------------------------------------------------------------------


def test_top_k_top_p_and_repetition_penalty_match_hf_processors():
    import torch
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 64)).astype(np.float32) * 3
    top_k = np.array([0, 5, 20, 3, 64], np.int32)
    top_p = np.array([0.9, 1.0, 0.5, 0.3, 0.05], np.float32)
    ours = np.asarray(filter_top_k_top_p(jnp.asarray(logits), jnp.asarray(top_k), jnp.asarray(top_p)))
    for i in range(5):
        ref = torch.from_numpy(logits[i : i + 1].copy())
        if top_k[i] > 0:
            ref = TopKLogitsWarper(int(top_k[i]))(None, ref)
        if top_p[i] < 1:
            ref = TopPLogitsWarper(float(top_p[i]))(None, ref)
        ref = ref.numpy()[0]
        np.testing.assert_array_equal(np.isinf(ours[i]), np.isinf(ref), err_msg=f"row {i}")
        np.testing.assert_allclose(ours[i][~np.isinf(ref)], ref[~np.isinf(ref)])
        assert np.isfinite(ours[i]).sum() >= 1

    seen_ids = rng.integers(0, 64, size=(5, 10))
    seen = np.zeros((5, 64), bool)
    seen[np.arange(5)[:, None], seen_ids] = True
    penalty = np.array([1.0, 1.03, 1.5, 0.8, 2.0], np.float32)
    ours = np.asarray(apply_repetition_penalty(jnp.asarray(logits), jnp.asarray(seen), jnp.asarray(penalty)))
    for i in range(5):
        proc = RepetitionPenaltyLogitsProcessor(float(penalty[i]))
        ref = proc(torch.from_numpy(seen_ids[i : i + 1]), torch.from_numpy(logits[i : i + 1].copy())).numpy()[0]
        np.testing.assert_allclose(ours[i], ref, rtol=1e-6)


# Nucleus at 0.75: mass before token 2 is 0.65 < 0.75 (kept), before token 3 is 0.8 (dropped). At top_p 1 every
# token is kept (the one-pass path).
@pytest.mark.parametrize(
    "top_p, expected",
    [(0.75, np.array([0.4, 0.25, 0.15, 0, 0, 0, 0]) / 0.8), (1.0, np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02]))],
)
def test_sampled_frequencies_follow_the_nucleus_distribution(top_p, expected):
    logits = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02], np.float32))
    n = 6000
    params = [SamplingParams(temperature=1.0, top_p=top_p, seed=s) for s in range(n)]
    rows = jax.tree.map(jnp.asarray, row_params(params, eos_id=None, stop_slots=2))
    batch_logits = jnp.broadcast_to(jnp.asarray(logits), (n, len(logits)))
    tokens, logprobs = jax.jit(sample_tokens)(batch_logits, jnp.zeros(batch_logits.shape, bool), rows, jnp.int32(0))
    counts = np.bincount(np.asarray(tokens), minlength=len(logits)) / n
    np.testing.assert_allclose(counts, expected, atol=0.025)
    np.testing.assert_allclose(np.asarray(logprobs), logits[np.asarray(tokens)], rtol=1e-5)


def test_candidate_and_full_vocabulary_paths_draw_the_same_tokens():
    """The fast path (kept set inside the top candidates) and the full-vocabulary path agree row by row; rows
    that cut nothing (top-p 1) are drawn over the whole vocabulary either way."""
    from janus_jax.sample import _sample_full

    rng = np.random.default_rng(3)
    n, vocab = 400, 1000
    logits = rng.normal(size=(n, vocab)).astype(np.float32)
    logits[:, :20] += 8.0  # a peaked head, so that a 0.9 nucleus fits in the candidates
    params = [
        SamplingParams(temperature=0.8, top_p=[0.9, 0.9, 0.9, 1.0][s % 4], top_k=[0, 10, 50, 0][s % 4], seed=s)
        for s in range(n)
    ]
    rows = jax.tree.map(jnp.asarray, row_params(params, eos_id=None, stop_slots=2))
    x = jnp.asarray(logits)
    fast, _ = jax.jit(sample_tokens)(x, jnp.zeros(x.shape, bool), rows, jnp.int32(4))
    full = jax.jit(_sample_full)(x / 0.8, rows, jnp.int32(4))
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(full))
    assert len(np.unique(np.asarray(fast))) > 10


@pytest.mark.parametrize("vocab", [1000, 1024])  # padded to lane blocks, and not
def test_vocabulary_reductions_equal_jax_ones(vocab):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, vocab)).astype(np.float32) * 4
    x[1, [3, vocab - 1]] = 50.0  # a tie: the first index, as argmax
    x[2, vocab - 1] = 50.0  # the maximum in the last (padded) block
    x[3] = -7.0  # all equal
    x[4, :200] = -np.inf  # masked tokens
    assert np.asarray(first_argmax(jnp.asarray(x))).tolist() == np.argmax(x, axis=-1).tolist()
    np.testing.assert_allclose(log_normalizer(jnp.asarray(x)), jax.nn.logsumexp(x, axis=-1), rtol=1e-6)


def test_generation_programs_use_xla_dots_on_cpu():
    """On CPU, generation's programs are compiled without YNNPACK's matmuls (slower at decoding's few rows)."""
    x, w = jnp.ones((16, 384)), jnp.ones((384, 1024))
    program = GenerationJit(lambda x, w: x @ w).lower(x, w).compile().as_text()
    assert " dot(" in program and "__ynn_fusion" not in program


def test_greedy_and_sampled_rows_share_a_batch():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(4, 32)).astype(np.float32))
    seen = jnp.zeros((4, 32), bool).at[:, int(jnp.argmax(logits[2]))].set(True)
    params = [
        GREEDY,
        SamplingParams(temperature=5.0, seed=1),
        dataclasses.replace(GREEDY, repetition_penalty=50.0),
        SamplingParams(temperature=5.0, seed=2),
    ]
    rows = jax.tree.map(jnp.asarray, row_params(params, eos_id=None, stop_slots=2))
    tokens, _ = sample_tokens(logits, seen, rows, jnp.int32(0))
    assert int(tokens[0]) == int(jnp.argmax(logits[0]))
    # The penalty removes the seen argmax of row 2, so greedy picks the runner-up.
    assert int(tokens[2]) == int(jnp.argsort(logits[2])[-2])


def test_buckets_and_stop_string_holdback():
    assert [bucket(n, 16) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert stop_string_holdback("hello ##", ["###"]) == 2
    assert stop_string_holdback("hello", ["###", "lo!"]) == 2
    assert stop_string_holdback("hello", ["###"]) == 0


def test_bad_sampling_parameters_are_refused_with_the_field_name(sampler):
    with pytest.raises(ValueError, match="temperature"):
        sampler.generate([[1, 2]], SamplingParams(temperature=-0.5))
    with pytest.raises(ValueError, match="row 1: empty prompt"):
        sampler.generate([[1, 2], []], GREEDY)
    with pytest.raises(ValueError, match="context length"):
        sampler.generate([[1] * 2040], SamplingParams(max_new_tokens=16))


# ---- cached decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("windowed", [False, True])
def test_prefill_then_cached_steps_equal_full_forward(model, window_model, windowed):
    """Right-padded prompts of different lengths, then k one-token steps, vs one forward pass per row.

    With a sliding window of 8 and a cache of 8 slots, the 20-token sequences wrap the ring twice.
    """
    m = window_model if windowed else model
    rng = np.random.default_rng(2)
    lengths, steps = [5, 11], 9
    seqs = [rng.integers(3, VOCAB, size=n + steps).tolist() for n in lengths]
    prompt_len = max(lengths)
    ids = np.zeros((2, prompt_len), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = seqs[i][:n]
    positions = np.broadcast_to(np.arange(prompt_len), (2, prompt_len))
    segments = (positions < np.array(lengths)[:, None]).astype(np.int32)
    graphdef, state = nnx.split(m)
    call = jax.jit(lambda state, *args: nnx.merge(graphdef, state)(*args))
    cache = init_cache(m.config, batch_size=2, max_length=8 if windowed else prompt_len + steps)
    logits, cache = call(state, jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(segments), cache)
    cached = [[np.asarray(logits[i, :n]) for i, n in enumerate(lengths)]]
    for k in range(steps):
        tok = np.array([[seqs[i][n + k]] for i, n in enumerate(lengths)], np.int32)
        pos = np.array([[n + k] for n in lengths], np.int32)
        step_logits, cache = call(state, jnp.asarray(tok), jnp.asarray(pos), jnp.ones((2, 1), jnp.int32), cache)
        cached.append([np.asarray(step_logits[i]) for i in range(2)])
    for i in range(2):
        full = full_logits(m, seqs[i])
        got = np.concatenate([c[i] for c in cached], axis=0)
        np.testing.assert_allclose(got, full, atol=1e-4, rtol=1e-4)


def test_sampler_greedy_equals_full_forward_greedy(model, window_model, sampler):
    prompts = [[1, 17, 40], [1, 99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89]]
    out = sampler.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=10))
    for prompt, completion in zip(prompts, out):
        assert completion.token_ids == greedy_reference(model, prompt, 10)
        assert completion.finish_reason == "length" and completion.prompt_tokens == len(prompt)
        assert len(completion.logprobs) == 10 and all(lp <= 0 for lp in completion.logprobs)
    # Sliding window: 12 + 20 tokens wrap a 16-slot ring buffer.
    windowed = Sampler(window_model, eos_id=VOCAB + 1, min_new_tokens_bucket=16)
    out = windowed.generate(prompts[1:], SamplingParams(temperature=0.0, max_new_tokens=20))
    assert windowed.shapes([12], 20, 1)[3] == 16
    assert out[0].token_ids == greedy_reference(window_model, prompts[1], 20)


def test_changing_sampling_parameters_does_not_recompile(sampler):
    prompts = [[1, 5, 6], [1, 7]]
    sampler.generate(prompts, SamplingParams(max_new_tokens=8))
    before = sampler.compilations()
    variants = [
        SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.9, seed=3),
        SamplingParams(max_new_tokens=5, temperature=0.0, repetition_penalty=1.3),
        SamplingParams(max_new_tokens=16, temperature=1.3, top_k=7, seed=11, stop_token_ids=(4, 9)),
    ]
    for params in variants:
        out = sampler.generate(prompts, [params, GREEDY.__class__(max_new_tokens=3, seed=5)])
        assert len(out[0].token_ids) == params.max_new_tokens and len(out[1].token_ids) == 3
    assert sampler.compilations() == before


def test_a_seeded_row_does_not_depend_on_its_batch_mates(sampler):
    p = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, repetition_penalty=1.03, seed=7)
    first = sampler.generate([[1, 20, 21, 22], [1, 3]], [p, GREEDY])
    second = sampler.generate([[1, 8, 9, 10, 11, 12], [1, 20, 21, 22]], [dataclasses.replace(p, seed=8), p])
    assert second[1].token_ids == first[0].token_ids
    assert second[0].token_ids != first[0].token_ids


def test_stop_tokens_end_a_row_early(sampler, model):
    reference = greedy_reference(model, [1, 17, 40], 10)
    stop = reference[4]
    first = reference.index(stop)
    out = sampler.generate([[1, 17, 40], [1, 50]], [SamplingParams(temperature=0, stop_token_ids=(stop,)), GREEDY])
    assert out[0].token_ids == reference[:first] and out[0].finish_reason == "stop"
    assert len(out[0].logprobs) == first


def test_sharded_sampler_matches_unsharded(model, sampler):
    from janus_jax.sharding import make_mesh

    mesh = make_mesh((2, 2, 2))
    sharded = Sampler(model, eos_id=VOCAB + 1, mesh=mesh)
    assert sharded.batch_multiple == 4
    prompts = [[1, 17, 40], [1, 99, 98, 97, 96], [1, 5], [1, 6, 7, 8, 9, 10, 11], [1, 2, 3]]
    params = [SamplingParams(max_new_tokens=9, temperature=0.9, top_p=0.9, top_k=40, seed=i) for i in range(4)] + [
        SamplingParams(max_new_tokens=9, temperature=0.0)
    ]
    expected = sampler.generate(prompts, params)
    got = sharded.generate(prompts, params)
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    np.testing.assert_allclose(
        np.concatenate([c.logprobs for c in got]), np.concatenate([c.logprobs for c in expected]), atol=1e-4
    )


def test_greedy_matches_transformers_generate(tmp_path):
    import torch
    from transformers import MistralConfig as HFConfig
    from transformers import MistralForCausalLM

    import janus_jax

    torch.manual_seed(0)
    hf_cfg = HFConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=1e6,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
    )
    hf = MistralForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # a sharper distribution than the random init, so argmax ties cannot happen
        for p in hf.parameters():
            p.mul_(4.0)
    hf.save_pretrained(tmp_path)
    ours = Sampler(janus_jax.from_pretrained(tmp_path, compute_dtype="float32"))
    prompts = [[1, 33, 7, 400, 12], [1, 250, 251, 3, 4, 5, 6, 7, 8]]
    out = ours.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=16))
    for prompt, completion in zip(prompts, out):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=16, pad_token_id=0)
        ref = ref[0, len(prompt) :].tolist()
        if completion.finish_reason == "stop":
            assert ref == completion.token_ids + [2]
        else:
            assert ref == completion.token_ids


@pytest.mark.parametrize(
    "windowed", [pytest.param(False, marks=pytest.mark.slow), True]  # the windowed case covers the other too
)
def test_rows_joining_decode_slots_equal_full_forward_greedy(model, window_model, windowed):
    """Continuous batching (janus_jax.serve.slots): a row admitted while another decodes, with a cache
    that grows under the running row (re-laid out; with a window of 8 the ring has wrapped), draws the
    same greedy tokens as one full forward pass per token."""
    from janus_jax.serve.slots import Slots

    m = window_model if windowed else model
    slots = Slots(Sampler(m, eos_id=VOCAB + 1), batch=4, prefill_rows=2)
    first, second = [1, 17, 40, 41, 42], [1, *range(100, 130)]
    params = SamplingParams(temperature=0.0, max_new_tokens=20)
    got = {0: [], 3: []}
    need = slots.needed_cache_length(len(first), 20)
    drawn = slots.admit([0], [first], row_params([params], VOCAB + 1, 8), *np.zeros((2, 1), bool), need)
    got[0].append(int(drawn.tokens[0, 0]))
    for _ in range(4):  # the first row decodes (and, with a window, wraps its 16-slot ring)
        drawn = slots.decode(np.zeros(4, bool), 4)
        got[0] += np.asarray(drawn.tokens)[0, : int(drawn.generated[0]) - len(got[0])].tolist()
    length = slots.cache_length
    need = slots.needed_cache_length(len(second), 20)
    assert need > length  # the newcomer's longer prompt grows the cache under the running row
    drawn = slots.admit([3], [second], row_params([params], VOCAB + 1, 8), *np.zeros((2, 1), bool), need)
    got[3].append(int(drawn.tokens[0, 0]))
    for _ in range(6):  # 4 steps per call: both rows are done within 5 calls
        drawn = slots.decode(np.zeros(4, bool), 4)
        for slot in (0, 3):
            got[slot] += np.asarray(drawn.tokens)[slot, : int(drawn.generated[slot]) - len(got[slot])].tolist()
    assert np.asarray(drawn.done)[[0, 3]].all()
    assert slots.cache_length == need
    assert got[0] == greedy_reference(m, first, 20)
    assert got[3] == greedy_reference(m, second, 20)


def test_slots_compute_log_probs_only_for_rows_that_ask_for_them(model):
    """A row that asked for log-probs gets the model's log-softmax of each token it drew, from admission
    through decoding; its batch mate that did not ask gets zeros, and both draw the same greedy tokens."""
    from janus_jax.serve.slots import Slots

    slots = Slots(Sampler(model, eos_id=VOCAB + 1), batch=4, prefill_rows=2)
    prompt, params = [1, 17, 40, 41, 42], SamplingParams(temperature=0.0, max_new_tokens=6)
    need = slots.needed_cache_length(len(prompt), 6)
    rows = row_params([params] * 2, VOCAB + 1, 8)
    drawn = slots.admit([0, 1], [prompt, prompt], rows, np.array([True, False]), np.zeros(2, bool), need)
    tokens = np.asarray(drawn.tokens)[:2, :1].tolist()
    logprobs = np.asarray(drawn.logprobs)[:2, :1].tolist()
    drawn = slots.decode(np.zeros(4, bool), 5)
    for slot in (0, 1):
        tokens[slot] += np.asarray(drawn.tokens)[slot].tolist()
        logprobs[slot] += np.asarray(drawn.logprobs)[slot].tolist()
    assert tokens[0] == tokens[1] == greedy_reference(model, prompt, 6)
    ids = prompt + tokens[0]
    reference = jax.nn.log_softmax(full_logits(model, ids)[len(prompt) - 1 : -1], axis=-1)
    assert logprobs[0] == pytest.approx(np.asarray(reference)[np.arange(6), tokens[0]].tolist(), abs=1e-4)
    assert logprobs[1] == [0.0] * 6


def test_decoding_only_the_occupied_slots_draws_what_the_whole_batch_draws(model):
    """Decode calls that compute only the occupied slots (gathered into widths of 2 and 4 out of 32) draw the same
    greedy tokens as full forward passes, and leave the other slots' rows as they were: a row that sat out two
    calls (slot 23) goes on as if it had decoded alone. (Calls of the whole batch are the test above.)"""
    from janus_jax.serve.slots import Slots

    slots = Slots(Sampler(model, eos_id=VOCAB + 1), batch=32)
    prompts = {2: [1, 17, 40, 41, 42], 9: [1, 5, 6, 7], 23: [1, *range(100, 110)]}
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    need = max(slots.needed_cache_length(len(p), 12) for p in prompts.values())
    drawn = slots.admit(list(prompts), list(prompts.values()), row_params([params] * 3, VOCAB + 1, 8),
                        *np.zeros((2, 3), bool), need)
    got = {slot: [int(t)] for slot, t in zip(prompts, np.asarray(drawn.tokens)[:3, 0], strict=True)}

    def decode(occupied):
        drawn = slots.decode(np.zeros(32, bool), 4, occupied)
        index = {int(s): i for i, s in enumerate(np.asarray(drawn.slots))}
        assert len(index) == slots.decode_width(len(occupied)) < 32
        for slot in occupied:
            i = index[slot]
            got[slot] += np.asarray(drawn.tokens)[i, : int(drawn.generated[i]) - len(got[slot])].tolist()

    # Powers of two, and from 32 on the 3/4 points between them, capped at the batch.
    assert [slots.decode_width(n) for n in (1, 2, 3, 5, 16, 17, 24, 25, 32)] == [1, 2, 4, 8, 16, 24, 24, 32, 32]
    decode([2, 9])  # slot 23 sits out two calls
    decode([2, 9])
    assert len(got[23]) == 1 and len(got[2]) == 9
    for _ in range(3):
        decode([2, 9, 23])
    assert {slot: len(tokens) for slot, tokens in got.items()} == {2: 12, 9: 12, 23: 12}
    for slot, prompt in prompts.items():
        assert got[slot] == greedy_reference(model, prompt, 12), slot
