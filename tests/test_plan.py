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
from janus_jax.train.run import build_run

ROOT = Path(__file__).resolve().parents[1]


def test_target_names_follow_cloud_conventions():
    v4 = plan.parse_target("v4-32")  # 32 TensorCores = 16 chips
    assert (v4.num_devices, v4.memory_bytes, v4.tpu.topology) == (16, 32 * plan.GIB, "v4:2x2x4")
    assert plan.parse_target("v5p-128").tpu.topology == "v5:4x4x4"  # 64 chips of 95 GiB
    assert plan.parse_target("v5p-128").memory_bytes == 95 * plan.GIB
    assert plan.parse_target("v5e-64").tpu.topology == "v5e:8x8"  # v5e and v6e count chips
    assert plan.parse_target("v5e-256").tpu.topology == "v5e:16x16"
    assert plan.parse_target("v6e-64").tpu.topology == "v6e:8x8"
    assert plan.parse_target("v6e-8").memory_bytes == 32 * plan.GIB
    named = plan.parse_target("v5e:4x8:1x8x4")  # a topology, then a pinned mesh
    assert (named.num_devices, named.mesh_shape, named.tpu.spec) == (32, (1, 8, 4), "v5e:4x8")
    assert plan.parse_target("v5p:4x4x12").num_devices == 192
    gpu = plan.parse_target("8xH100")
    assert (gpu.num_devices, gpu.memory_bytes, gpu.mesh_shape, gpu.tpu) == (8, 80 * plan.GIB, None, None)
    assert plan.parse_target("v5e-64:1x16x4").mesh_shape == (1, 16, 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("v9-8", "unknown TPU slice 'v9-8'; known: v4-8 ... v4-4096.*v5e-4 ... v5e-256"),
        ("v5e-48", "unknown TPU slice 'v5e-48': name a topology for other sizes"),
        ("v5e:4x4x4", "v5e chips form a 2-D grid"),
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


@pytest.mark.slow  # 25-40 s on 2 cores (make test-all); the sharded SFT step and TPU plans stay in make test
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


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_cli_plans_each_target_in_its_own_process():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "janus_jax.cli.plan",
            "--config=configs/sft.py:tiny",
            "--config.data.seq_len=64",
            "--config.model.init_from=hub/never-loaded",
            "--targets=2xA100,4xH100:1x2x2,6xA100:1x1x6",
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
    assert a100["compiled_for"] == "CPU (estimate)" and "roofline" not in a100
    h100 = by_target[("4xH100", 4)]
    assert h100["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    # the same weights over 4 devices instead of 2: half the state per device
    assert h100["state_bytes"] == pytest.approx(a100["state_bytes"] / 2, rel=0.02)
    bad = by_target[("6xA100", 6)]
    assert bad["status"] == "ERROR" and "not divisible" in bad["error"]
    assert "2xA100" in proc.stdout and "FITS" in proc.stdout and "attention was planned" in proc.stdout
    assert "GPU rows are estimates" in proc.stdout


def test_tpu_slice_is_compiled_by_the_tpu_compiler_and_a_plan_that_does_not_fit_names_its_buffers():
    """A real topology name, compiled for TPU v5e by libtpu on this CPU-only machine (splash attention
    inside shard_map, as `auto` picks on TPU), judged against a chip shrunk to 8 MiB so that it cannot fit."""
    pytest.importorskip("libtpu", reason='needs the TPU compiler: pip install "jax[tpu]==0.10.2"')
    cfg = sft.get_config("tiny")
    cfg.model.init_from = "hub/never-loaded"
    cfg.data.seq_len = 128
    real = plan.parse_target("v5e-4")
    small = plan.Target("v5e-4", real.num_devices, 8 * 1024**2, (1, 2, 2), real.tpu)
    row = plan.plan_target(cfg, small)
    assert row["status"] == "DOES NOT FIT", row.get("error")
    assert (row["compiled_for"], row["topology"], row["attention_impl"]) == ("TPU v5 lite", "v5e:2x2", "splash")
    assert row["code_bytes"] > 0 and row["total_bytes"] > 8 * 1024**2
    # the compiler counts the scanned layers' body once; the roofline uses the model's FLOPs
    roof = row["roofline"]
    assert roof["model_flops"] == pytest.approx(plan.model_flops_per_step(cfg) / 4)
    assert roof["step_seconds"] > 0 and 0 < roof["mfu"] <= 1
    biggest = row["largest_buffers"]
    assert len(biggest) == 5 and biggest[0]["bytes"] >= biggest[-1]["bytes"] > 0
    assert any("embed_tokens" in b["op"] or "lm_head" in b["op"] for b in biggest)  # named by JAX path
    notes = "\n".join(plan.plan_notes([row]))
    assert "v5e-4 does not fit; largest buffers:" in notes and biggest[0]["shape"] in notes
    assert "TPU-compiled" in notes and "splash attention" in notes
    table = plan.format_table([row])
    assert "TPU v5 lite" in table and "DOES NOT FIT" in table


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
    run = build_run(cfg, mesh=make_mesh((2, 2, 2), jax.devices()[:8]), with_data=False)
    hlo = run.lower().compile().as_text()
    gathered = re.findall(r"= \w+\[([\d,]*)\]\S* all-gather\(", hlo)
    assert gathered, "expected FSDP weight all-gathers"
    rows = cfg.train.global_batch_size // cfg.train.grad_accum_steps
    full_batch = [dims for dims in gathered if dims.split(",")[0] in (str(rows), str(rows // 2))]
    assert not full_batch, f"activations all-gathered across the batch: {full_batch}"
