"""HF checkpoint import/export: bad checkpoints fail loudly, sharded and bf16 loads are exact."""

import json

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx
from hf_reference import random_hf_model

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


def test_bfloat16_checkpoint_round_trip(tmp_path):
    model = random_hf_model(seed=5).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    ours = janus_jax.from_pretrained(tmp_path / "bf16", dtype="bfloat16")
    assert ours.lm_head.kernel[...].dtype == jax.numpy.bfloat16
    janus_jax.save_pretrained(ours, tmp_path / "out")
    a, b = (
        SafetensorsFile(tmp_path / "bf16" / "model.safetensors"),
        SafetensorsFile(tmp_path / "out" / "model.safetensors"),
    )
    assert sorted(a.keys()) == sorted(b.keys())
    for name in a:
        assert b.dtype(name) == np.dtype(ml_dtypes.bfloat16)
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))
