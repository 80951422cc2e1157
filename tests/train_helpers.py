"""Small SFT datasets and configs for trainer tests (no dependency on the bundled samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c
