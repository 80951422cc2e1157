"""The Flax Mistral reproduces HF transformers' PyTorch Mistral, both ways through checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from hf_reference import hf_logits, random_hf_model

import janus_jax
from janus_jax.hf_io import hf_names
from janus_jax.model import Mistral, MistralConfig

CASES = {
    "mha_theta1e4": dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=1e4),
    "gqa2_theta1e6": dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6),
    "gqa4_window": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=8, sliding_window=48, rope_theta=1e6),
}
SEQ_LEN = 256


def _ids(vocab: int, batch: int = 2, seq: int = SEQ_LEN, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, seq), dtype=np.int32)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_to_janus_logits(tmp_path, case):
    hf_model = random_hf_model(seed=1, **CASES[case])
    hf_model.save_pretrained(tmp_path)
    model = janus_jax.from_pretrained(tmp_path, dtype="float32", compute_dtype="float32")
    assert model.config.sliding_window == CASES[case].get("sliding_window")
    ids = _ids(hf_model.config.vocab_size)
    ours = np.asarray(jax.jit(lambda m, x: m(x))(model, ids))
    theirs = hf_logits(hf_model, ids)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", ["gqa2_theta1e6", "gqa4_window"])
def test_janus_to_hf_logits(tmp_path, case):
    overrides = dict(CASES[case])
    theta = overrides.pop("rope_theta")
    cfg = MistralConfig.tiny(vocab_size=512, intermediate_size=96, rope_theta=theta, **overrides)
    model = Mistral(cfg, rngs=nnx.Rngs(3))
    # Non-trivial norm weights, so a swapped norm mapping cannot pass.
    for norm in (model.norm, model.layers.input_layernorm, model.layers.post_attention_layernorm):
        norm.weight[...] = norm.weight[...] + 0.1 * jax.random.normal(jax.random.key(7), norm.weight[...].shape)
    janus_jax.save_pretrained(model, tmp_path, dtype="float32", max_shard_bytes=200_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager"
    )
    assert isinstance(hf_model, transformers.MistralForCausalLM)
    ids = _ids(cfg.vocab_size, seed=1)
    np.testing.assert_allclose(np.asarray(nnx.jit(model)(ids)), hf_logits(hf_model, ids), atol=1e-4, rtol=0)


def test_packed_rows_equal_separate_documents():
    cfg = MistralConfig.tiny(vocab_size=256, sliding_window=24)
    model = Mistral(cfg, rngs=nnx.Rngs(0))
    doc_a, doc_b = _ids(256, 1, 40, seed=2)[0], _ids(256, 1, 30, seed=3)[0]
    packed = np.zeros((1, 80), np.int32)
    packed[0, :40], packed[0, 40:70] = doc_a, doc_b
    positions = np.zeros((1, 80), np.int32)
    positions[0, :40], positions[0, 40:70] = np.arange(40), np.arange(30)
    segments = np.zeros((1, 80), np.int32)
    segments[0, :40], segments[0, 40:70] = 1, 2
    out = np.asarray(nnx.jit(model)(packed, positions=positions, segment_ids=segments))
    # Alone, each document is a row of its own; doc_b's row is padded at its end, which a causal model's
    # first 30 positions do not see.
    alone = np.zeros((2, 40), np.int32)
    alone[0], alone[1, :30] = doc_a, doc_b
    separate = np.asarray(nnx.jit(model)(alone))
    np.testing.assert_allclose(out[0, :40], separate[0], atol=1e-5)
    np.testing.assert_allclose(out[0, 40:70], separate[1, :30], atol=1e-5)


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_scanned_equals_unrolled_and_remat():
    cfg = MistralConfig.tiny(vocab_size=256, num_hidden_layers=3)
    ids = _ids(256, 2, 33)
    ref = Mistral(cfg, rngs=nnx.Rngs(0))
    want = np.asarray(ref(ids))
    graphdef, state = nnx.split(ref)
    for variant in (dict(scan_layers=False), dict(remat="full"), dict(remat="save_qkv", scan_layers=False)):
        other = nnx.merge(nnx.graphdef(Mistral(cfg.replace(**variant), rngs=nnx.Rngs(0))), state)
        np.testing.assert_allclose(np.asarray(other(ids)), want, atol=1e-5)

        other_def = nnx.graphdef(other)

        def loss(st, gd=other_def):
            return nnx.merge(gd, st)(ids).mean()

        g_other = jax.grad(loss)(state)
        g_ref = jax.grad(lambda st: nnx.merge(graphdef, st)(ids).mean())(state)
        for a, b in zip(jax.tree.leaves(g_other), jax.tree.leaves(g_ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize(  # the windowed case is slow (make test-all); its forward is checked in make test
    "case", ["gqa2_theta1e6", pytest.param("gqa4_window", marks=pytest.mark.slow)]
)
def test_training_gradients_match_torch(tmp_path, case):
    """Token-weighted NLL gradients for every weight, ours (hand-written VJPs) against PyTorch autograd."""
    hf_model = random_hf_model(seed=2, **CASES[case]).float()
    hf_model.save_pretrained(tmp_path)
    model = janus_jax.from_pretrained(tmp_path, dtype="float32", compute_dtype="float32")
    ids = _ids(hf_model.config.vocab_size, batch=2, seq=96, seed=3)
    targets = np.roll(ids, -1, axis=1)
    weights = np.zeros(ids.shape, np.float32)
    weights[:, 40:95] = 1.0  # the "response": the last column has no next token

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        return -jnp.sum(weights * m.target_logps(ids, targets)) / weights.sum()

    ours = jax.jit(jax.grad(loss))(params)

    hf_model.train()
    logits = hf_model(torch.as_tensor(ids, dtype=torch.long)).logits
    flat_targets = torch.as_tensor(targets, dtype=torch.long).flatten()
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), flat_targets, reduction="none")
    (nll * torch.as_tensor(weights).flatten()).sum().div(float(weights.sum())).backward()
    theirs = dict(hf_model.named_parameters())
    checked = 0
    for hf_name, (path, transposed, layer) in hf_names(model.config).items():
        grad = ours
        for key in path:
            grad = grad[key]
        grad = np.asarray(grad[...] if layer is None else grad[...][layer])
        want = theirs[hf_name].grad.numpy()
        want = want.T if transposed else want
        np.testing.assert_allclose(grad, want, atol=2e-5 * max(1.0, np.abs(want).max()), rtol=0, err_msg=hf_name)
        checked += 1
    assert checked == len(theirs)
