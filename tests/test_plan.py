"""janus-plan: target names, mesh choice, and ahead-of-time memory plans compiled for real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs import dpo, sft
from janus_jax import plan

ROOT = Path(__file__).resolve().parents[1]


def test_target_names_follow_cloud_conventions():
    v4 = plan.parse_target("v4-32")  # 32 TensorCores = 16 chips
    assert (v4.num_devices, v4.memory_bytes) == (16, 32 * plan.GIB)
    assert plan.parse_target("v5p-128").num_devices == 64
    assert plan.parse_target("v5e-64").num_devices == 64  # v5e and v6e count chips
    assert plan.parse_target("v6e-8").memory_bytes == 32 * plan.GIB
    gpu = plan.parse_target("8xH100")
    assert (gpu.num_devices, gpu.memory_bytes, gpu.mesh_shape) == (8, 80 * plan.GIB, None)
    assert plan.parse_target("v5e-64:1x16x4").mesh_shape == (1, 16, 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("v9-8", "unknown target 'v9-8'"),
        ("8xB200", "unknown target '8xB200'"),
        ("v5e-64:1x16x2", "has 32 devices, v5e-64 has 64"),
        ("v5e-64:1x64", "three positive sizes"),
    ],
)
def test_bad_targets_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        plan.parse_target(text)


def test_mesh_moves_what_the_batch_cannot_split_to_tensor():
    cfg = sft.get_config("janus_7b")  # 32 sequences per step in 4 micro-batches of 8
    assert plan.choose_mesh(cfg, 8) == (1, 8, 1)
    assert plan.choose_mesh(cfg, 64) == (1, 8, 8)
    cfg.train.grad_accum_steps = 1
    assert plan.choose_mesh(cfg, 64) == (1, 32, 2)
    pairs = dpo.get_config("janus_dpo_7b")  # 16 pairs per step in micro-batches of 8 pairs
    assert plan.choose_mesh(pairs, 64) == (1, 8, 8)
    pairs.train.grad_accum_steps = 1
    assert plan.choose_mesh(pairs, 64) == (1, 16, 4)


def test_batch_shapes_match_the_pipeline_keys():
    from janus_jax.objectives import REGISTRY
    from janus_jax.train.run import batch_layout

    shapes = batch_layout(dpo.get_config("janus_dpo_7b"), REGISTRY["dpo"])
    assert shapes["chosen_input_ids"][0] == (16, 2048)
    assert shapes["pair_weights"][0] == (16,)
    assert "ref_chosen_logps" not in shapes
    cfg = dpo.get_config("janus_dpo_7b")
    cfg.dpo.reference = "precomputed"
    assert batch_layout(cfg, REGISTRY["dpo"])["ref_rejected_logps"][0] == (16,)


def _small_dpo_config():
    cfg = dpo.get_config("tiny")
    cfg.model.init_from = "some/hub-model-that-must-not-be-loaded"
    cfg.data.seq_len = 64
    cfg.train.global_batch_size = 8
    cfg.dpo.reference_dtype = "bfloat16"
    return cfg


def test_plan_dpo_with_frozen_reference_on_8_devices():
    assert jax.device_count() == 8
    result = plan.plan_here(_small_dpo_config(), (1, 8, 1))
    n = result["num_params"]
    # fp32 weights + Adam mu + nu, fully sharded except the tiny norm vectors (replicated)
    assert 12 * n / 8 <= result["state_bytes"] < 12 * n / 8 * 1.02
    assert 2 * n / 8 <= result["reference_bytes"] < 2 * n / 8 * 1.02  # bf16 frozen copy
    assert result["alias_bytes"] == result["state_bytes"]  # the donated state is updated in place
    # arguments: state, reference and the batch arrays the loss reads (unused ones are pruned by jit)
    assert 0 < result["argument_bytes"] - result["state_bytes"] - result["reference_bytes"] <= result["batch_bytes"]
    want = result["argument_bytes"] + result["output_bytes"] - result["alias_bytes"] + result["temp_bytes"]
    assert result["total_bytes"] == want
    assert result["temp_bytes"] > 0 and result["compile_seconds"] > 0
    # 16 rows (8 pairs, two sides) over 8 devices, 4 heads, 64x64 float32 scores (one query block at 64)
    assert result["attention_scores_bytes"] == 2 * 4 * 64 * 64 * 4


def test_a_batch_that_does_not_split_over_the_mesh_is_named_not_a_raw_sharding_error():
    cfg = _small_dpo_config()
    row = plan.plan_target(cfg, plan.Target("v5e-64", 64, 16 * plan.GIB, (1, 16, 4)))
    assert row["status"] == "ERROR"
    assert "the global batch of 8 (train.global_batch_size) does not split over 16 data shards" in row["error"]


def test_cli_plans_each_target_in_its_own_process():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "janus_jax.plan",
            "--config=configs/sft.py:tiny",
            "--config.data.seq_len=64",
            "--config.model.init_from=hub/never-loaded",
            "--targets=2xA100,v5e-4:1x2x2,v5e-6:1x1x6",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # one target cannot be sharded
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    by_target = {(r["target"], r["devices"]): r for r in report["targets"]}
    a100 = by_target[("2xA100", 2)]
    assert a100["status"] == "FITS" and a100["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1}
    assert a100["headroom_bytes"] == 80 * plan.GIB - a100["total_bytes"]
    v5e = by_target[("v5e-4", 4)]
    assert v5e["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    # the same weights over 4 devices instead of 2: half the state per device
    assert v5e["state_bytes"] == pytest.approx(a100["state_bytes"] / 2, rel=0.02)
    bad = by_target[("v5e-6", 6)]
    assert bad["status"] == "ERROR" and "not divisible" in bad["error"]
    assert "2xA100" in proc.stdout and "FITS" in proc.stdout and "attention was planned" in proc.stdout


def test_table_reports_what_does_not_fit():
    row = {
        "target": "v5e-64",
        "devices": 64,
        "mesh": {"data": 1, "fsdp": 32, "tensor": 2},
        "capacity_bytes": 16 * plan.GIB,
        "state_bytes": 2 * plan.GIB,
        "reference_bytes": 0,
        "temp_bytes": 20 * plan.GIB,
        "total_bytes": 22 * plan.GIB,
        "headroom_bytes": -6 * plan.GIB,
        "status": "DOES NOT FIT",
    }
    table = plan.format_table([row])
    assert "DOES NOT FIT" in table and "-6.0 (-38%)" in table and "1/32/2" in table


def test_sharded_step_gathers_weights_but_never_a_whole_batch_of_activations():
    # (data, fsdp, tensor) = (2, 2, 2): FSDP gathers weights before use, but no device should ever hold
    # another device's rows (the embedding lookup used to gather every row to every device).
    from janus_jax.sharding import make_mesh

    cfg = sft.get_config("tiny")
    with cfg.unlocked():
        cfg.model.init_from = ""
        cfg.mesh.shape = (2, 2, 2)
    built = plan.build_train_step(cfg, make_mesh((2, 2, 2), jax.devices()[:8]))
    hlo = plan.lower_abstract(built, cfg).compile().as_text()
    gathered = re.findall(r"= \w+\[([\d,]*)\]\S* all-gather\(", hlo)
    assert gathered, "expected FSDP weight all-gathers"
    rows = cfg.train.global_batch_size // cfg.train.grad_accum_steps
    full_batch = [dims for dims in gathered if dims.split(",")[0] in (str(rows), str(rows // 2))]
    assert not full_batch, f"activations all-gathered across the batch: {full_batch}"
