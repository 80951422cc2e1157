"""Small SFT datasets and configs for trainer tests (no dependency on the bundled samples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from xla_flags import xla_flags

from configs import sft


def write_sft_rows(path: Path, n_instructions: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = ["river", "tea", "map", "clock", "bee", "glass", "salt", "stone", "cloud", "lamp"]
    styles = [
        ("Answer tersely.", lambda w: f"{w.title()}: fine."),
        ("Answer with a bulleted list.", lambda w: f"- first {w}\n- second {w}"),
        ("Answer like a pirate.", lambda w: f"Arr, the {w} be grand, matey!"),
    ]
    rows = []
    for i in range(n_instructions):
        w = words[rng.integers(len(words))]
        for system, answer in styles:
            rows.append(
                {
                    "main_source": "test",
                    "original_source": "test",
                    "preference_set": [],
                    "system": system,
                    "prompt": f"Tell me about the {w} number {i}.",
                    "output": answer(w),
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# A learning-rate schedule that does not depend on the run's length: runs of 1 to 6 steps then compile one
# train step (the cosine schedule bakes the step count into the program), shared through the compilation cache.
TEST_SCHEDULE = {"schedule": "constant", "warmup_steps": 0, "lr": 1e-3}


def tiny_sft_config(data_path: Path, **overrides):
    c = sft.get_config("tiny")
    c.data.source = str(data_path)
    c.data.seq_len = 128
    c.data.eval_fraction = 0.0
    c.train.global_batch_size = 8
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.checkpoint_every = 1000
    c.train.async_checkpoint = False
    c.optimizer.update(TEST_SCHEDULE)
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


REPO = Path(__file__).resolve().parents[1]


def cli_train(workdir, data_file: Path, overrides: dict, env_extra: dict | None = None,
              devices: int = 8) -> subprocess.Popen:
    """`janus-train` on the tiny SFT recipe as a user starts it, in its own process (output piped)."""
    args = [sys.executable, "-m", "janus_jax.cli.train", "--config=configs/sft.py:tiny", f"--workdir={workdir}"]
    flat = {
        "data.source": str(data_file),
        "data.seq_len": 128,
        "data.eval_fraction": 0.0,
        "train.global_batch_size": 8,
        "train.log_every": 1,
        "train.eval_every": 0,
        **{f"optimizer.{k}": v for k, v in TEST_SCHEDULE.items()},
        **overrides,
    }
    args += [f"--config.{k}={v}" for k, v in flat.items()]
    env = {**os.environ, "XLA_FLAGS": xla_flags(devices), "JAX_PLATFORMS": "cpu"}
    env.update(env_extra or {})
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
