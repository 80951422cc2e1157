"""HF checkpoint import/export: bad checkpoints fail loudly, loads are exact, and the defaults follow
transformers (the checkpoint's own dtype), so a default round trip writes the same bits back."""

import json

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from hf_reference import hf_logits, random_hf_model

import janus_jax
from janus_jax.safetensors_io import SafetensorsFile, save_file
from janus_jax.sharding import make_mesh


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    random_hf_model(seed=4).save_pretrained(path)
    return path


def _rewrite(src, dst, edit):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    sf = SafetensorsFile(src / "model.safetensors")
    tensors = {name: np.array(sf[name]) for name in sf}
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_missing_tensor_is_named(hf_dir, tmp_path):
    bad = _rewrite(hf_dir, tmp_path / "bad", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensors: \['model.layers.1.mlp.up_proj.weight'\]"):
        janus_jax.from_pretrained(bad)


def test_truncated_safetensors_names_the_file_and_the_tensor(hf_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((hf_dir / "config.json").read_text())
    data = (hf_dir / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"model.safetensors: tensor '.+' needs bytes .*truncated"):
        janus_jax.from_pretrained(bad)
    (bad / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(ValueError, match="too short for a safetensors header"):
        janus_jax.from_pretrained(bad)


def test_unexpected_tensor_is_named(hf_dir, tmp_path):
    bad = _rewrite(
        hf_dir, tmp_path / "bad", lambda t: t.update({"model.layers.0.extra.weight": np.zeros(3, np.float32)})
    )
    with pytest.raises(ValueError, match="unexpected tensors: .*model.layers.0.extra.weight"):
        janus_jax.from_pretrained(bad)


def test_shape_mismatch_is_named(hf_dir, tmp_path):
    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.k_proj.weight"][:16]

    bad = _rewrite(hf_dir, tmp_path / "bad", shrink)
    with pytest.raises(
        ValueError, match=r"model.layers.0.self_attn.k_proj.weight: checkpoint \(16, 64\) vs config \(32, 64\)"
    ):
        janus_jax.from_pretrained(bad)


def test_other_architecture_is_refused(hf_dir, tmp_path):
    bad = tmp_path / "llama"
    bad.mkdir()
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model_type='llama'.*Mistral checkpoints"):
        janus_jax.from_pretrained(bad)


def test_sharded_load_equals_single_device(hf_dir):
    single = janus_jax.from_pretrained(hf_dir)
    mesh = make_mesh((2, 2, 2))
    sharded = janus_jax.from_pretrained(hf_dir, mesh=mesh)
    q = sharded.layers.self_attn.q_proj.kernel[...]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    for a, b in zip(jax.tree.leaves(nnx.state(single)), jax.tree.leaves(nnx.state(sharded))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _assert_same_tensors(src, out, dtype):
    a, b = SafetensorsFile(src / "model.safetensors"), SafetensorsFile(out / "model.safetensors")
    assert sorted(a.keys()) == sorted(b.keys())
    for name in a:
        assert a.dtype(name) == b.dtype(name) == np.dtype(dtype), name
        assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name


@pytest.mark.parametrize("torch_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_default_round_trip_is_bitwise(tmp_path, torch_dtype):
    random_hf_model(seed=5).to(torch_dtype).save_pretrained(tmp_path / "in")
    ours = janus_jax.from_pretrained(tmp_path / "in")
    name = str(torch_dtype).removeprefix("torch.")
    assert ours.config.param_dtype == ours.config.dtype == name
    assert ours.lm_head.kernel[...].dtype == jax.numpy.dtype(name)
    janus_jax.save_pretrained(ours, tmp_path / "out")
    _assert_same_tensors(tmp_path / "in", tmp_path / "out", jax.numpy.dtype(name))
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["dtype"] == written["torch_dtype"] == name


def test_dtype_without_config_field_is_read_from_the_tensors(hf_dir, tmp_path):
    src = tmp_path / "bf16"
    random_hf_model(seed=6).to(torch.bfloat16).save_pretrained(src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("dtype", None), cfg.pop("torch_dtype", None)
    (src / "config.json").write_text(json.dumps(cfg))
    assert janus_jax.from_pretrained(src).config.param_dtype == "bfloat16"


def test_fp32_logits_match_transformers_without_keywords(hf_dir):
    theirs_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager")
    assert theirs_model.dtype == torch.float32
    ours = janus_jax.from_pretrained(hf_dir)
    ids = np.random.default_rng(0).integers(0, ours.config.vocab_size, size=(2, 64), dtype=np.int32)
    logits = np.asarray(ours(ids))
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, hf_logits(theirs_model, ids), atol=1e-4, rtol=0)


def test_explicit_dtypes_cast(hf_dir, tmp_path):
    ours = janus_jax.from_pretrained(hf_dir, dtype="bfloat16", compute_dtype="float32")
    assert (ours.config.param_dtype, ours.config.dtype) == ("bfloat16", "float32")
    janus_jax.save_pretrained(janus_jax.from_pretrained(hf_dir), tmp_path / "half", dtype="bfloat16")
    sf = SafetensorsFile(tmp_path / "half" / "model.safetensors")
    assert {sf.dtype(n) for n in sf} == {np.dtype(ml_dtypes.bfloat16)}
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "bfloat16"
