"""The launcher driving the real trainer (``janus-train``) on tiny SFT runs.

Both tests compile and train a real (tiny) Mistral several times, so they are marked slow.
"""

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, "-m", "janus_jax.cli.train"]

pytestmark = pytest.mark.slow


@pytest.fixture
def sft_data(tmp_path):
    """72 SFT rows in the Multifaceted Collection schema: 24 instructions x 3 system messages."""
    rows = [
        {
            "main_source": "synthetic",
            "original_source": "synthetic",
            "preference_set": [],
            "system": f"You are assistant {j}; you care about topic {i % 5}.",
            "prompt": f"Question {i}: what is {i} plus {j}?",
            "output": f"The answer is {i + j}. " * (1 + i % 3),
        }
        for i in range(24)
        for j in range(3)
    ]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANUS_")}
    return env


def _launch(*argv, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "launch", *argv], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _train_rows(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def test_two_process_sft_matches_the_eight_device_run(tmp_path, sft_data):
    job = [
        "--config=configs/sft.py:tiny",
        f"--config.data.source={sft_data}",
        "--config.train.num_epochs=2",
        "--config.train.log_every=1",
    ]
    two = _launch("run", "--target", "local", "--processes", "2", "--", *TRAIN, *job, f"--workdir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    one = _launch(
        "run",
        "--target",
        "local",
        "--processes",
        "1",
        "--devices-per-process",
        "8",
        "--",
        *TRAIN,
        *job,
        f"--workdir={tmp_path / 'one'}",
    )
    assert one.returncode == 0, one.stderr[-3000:]
    rows_two, rows_one = _train_rows(tmp_path / "two"), _train_rows(tmp_path / "one")
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] and len(rows_one) >= 2
    assert [r["loss"] for r in rows_two] == pytest.approx([r["loss"] for r in rows_one], rel=1e-5)
    manifest_two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest_two["devices"]["process_count"] == 2 and manifest_two["devices"]["device_count"] == 8
    assert manifest_two["status"] == "completed"


def test_four_point_sft_sweep_with_a_broken_point(tmp_path, sft_data):
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(
        textwrap.dedent(f"""
        def get_sweep():
            return {{
                "base": "configs/sft.py:tiny",
                "fixed": {{"data.source": "{sft_data}", "train.num_epochs": 1, "train.log_every": 1}},
                "points": [
                    {{"optimizer.lr": 1e-3}},
                    {{"optimizer.lr": 3e-3}},
                    {{"optimizer.lr": 3e-3, "data.system_messages_per_instruction": 4}},
                    {{"optimizer.lr": 3e-3, "data.system_messages_per_instruction": 1}},
                ],
            }}
        """)
    )
    sweep_dir = tmp_path / "sweep"
    ran = _launch("sweep", str(sweep_file), "--target", "local", "--sweep-dir", str(sweep_dir), "--", *TRAIN)
    assert ran.returncode == 1, ran.stderr[-3000:]
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["status"] for p in record["points"]] == ["completed", "completed", "failed", "completed"]
    broken = record["points"][2]["name"]
    assert f"{broken}: FAILED" in ran.stderr

    collected = _launch("collect", str(sweep_dir))
    assert collected.returncode == 0, collected.stderr
    assert len(collected.stdout.splitlines()) == 2 + 4
    table = list(csv.DictReader(io.StringIO((sweep_dir / "results.csv").read_text())))
    for row, point in zip(table, record["points"], strict=True):
        if point["name"] == broken:
            assert row["final_loss"] == "" and row["status"] == "failed"
        else:
            final = _train_rows(sweep_dir / point["name"])[-1]["loss"]
            assert float(row["final_loss"]) == pytest.approx(final) and row["status"] == "completed"
            assert row["code"]  # labelled from the run's manifest
