"""SFT training: sharding-invariant, exact accumulation, packing-invariant, stops on NaN."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from train_helpers import tiny_sft_config, write_sft_rows

from janus_jax.train.metrics import read_metrics
from janus_jax.train.trainer import NonFiniteLossError, train


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_sft_rows(tmp_path_factory.mktemp("data") / "sft.jsonl")


def _losses(workdir):
    return np.array([r["loss"] for r in read_metrics(workdir) if "loss" in r])


def _final_params(workdir):
    ckpt_dir = workdir / "checkpoints"
    step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    restored = ocp.StandardCheckpointer().restore(ckpt_dir / str(step) / "state")
    return restored["params"]


def test_one_device_equals_eight_device_mesh(tmp_path, data_file):
    one = tmp_path / "one"
    eight = tmp_path / "eight"
    train(tiny_sft_config(data_file, **{"train.max_steps": 5, "mesh.shape": (1, 1, 1)}), one)
    train(tiny_sft_config(data_file, **{"train.max_steps": 5, "mesh.shape": (2, 2, 2)}), eight)
    np.testing.assert_allclose(_losses(one), _losses(eight), rtol=1e-5)
    assert len(_losses(one)) == 5
    for a, b in zip(jax.tree.leaves(_final_params(one)), jax.tree.leaves(_final_params(eight))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_gradient_accumulation_is_exact(tmp_path, data_file):
    whole = tmp_path / "whole"
    micro = tmp_path / "micro"
    train(tiny_sft_config(data_file, **{"train.max_steps": 3}), whole)
    train(tiny_sft_config(data_file, **{"train.max_steps": 3, "train.grad_accum_steps": 4}), micro)
    np.testing.assert_allclose(_losses(whole), _losses(micro), rtol=1e-5)
    grads = [r["grad_norm"] for r in read_metrics(whole)], [r["grad_norm"] for r in read_metrics(micro)]
    np.testing.assert_allclose(*grads, rtol=1e-4)


def test_packing_on_and_off_give_the_same_loss(tmp_path, data_file):
    """One step over the whole (small) dataset: same examples, same token-weighted loss."""
    packed = tmp_path / "packed"
    unpacked = tmp_path / "unpacked"
    common = {"train.max_steps": 1, "train.global_batch_size": 40, "optimizer.lr": 0.0, "data.seq_len": 64}
    train(tiny_sft_config(data_file, **{**common, "data.packing": True}), packed)
    train(tiny_sft_config(data_file, **{**common, "data.packing": False}), unpacked)
    rows_p, rows_u = read_metrics(packed)[0], read_metrics(unpacked)[0]
    assert rows_p["loss_weight"] == rows_u["loss_weight"] > 0
    np.testing.assert_allclose(rows_p["loss"], rows_u["loss"], rtol=1e-5)


def test_nan_stops_before_any_checkpoint(tmp_path, data_file):
    workdir = tmp_path / "nan"
    cfg = tiny_sft_config(data_file, **{"train.max_steps": 4, "optimizer.lr": 1e30, "train.checkpoint_every": 1})
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(cfg, workdir)
    steps = [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    finite_steps = [r["step"] for r in read_metrics(workdir) if np.isfinite(r.get("loss", np.nan))]
    assert all(int(s) <= max(finite_steps, default=0) for s in steps)
