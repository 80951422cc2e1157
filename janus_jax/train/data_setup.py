"""Connects a run config to the data pipeline: read, validate, tokenize and plan before anything compiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ml_collections import ConfigDict

from janus_jax.data import build_data
from janus_jax.model import MistralConfig
from janus_jax.objectives import Objective


@dataclass
class RunData:
    train: Any
    eval: Any
    files: list[str]  # the data inputs, for the manifest's data_files
    report: dict
    total_steps: int


def build(cfg: ConfigDict, mcfg: MistralConfig, objective: Objective) -> RunData:
    """Errors (empty data, wrong format for the objective, batch/accumulation mismatch) come before compiling."""
    if cfg.train.global_batch_size % cfg.train.grad_accum_steps:
        raise ValueError(
            f"train.global_batch_size={cfg.train.global_batch_size} is not divisible by "
            f"train.grad_accum_steps={cfg.train.grad_accum_steps}"
        )
    bundle = build_data(
        cfg.data,
        global_batch_size=cfg.train.global_batch_size,
        num_epochs=cfg.train.num_epochs,
        expect="pairs" if objective.pairs else "sft",
    )
    if bundle.tokenizer.vocab_size > mcfg.vocab_size:
        raise ValueError(f"tokenizer has {bundle.tokenizer.vocab_size} ids but the model only {mcfg.vocab_size}")
    # Every input as given (a local file or folder, a gs:// URL, a hub name): the manifest hashes the local ones.
    files = [str(source) for source in (cfg.data.source, cfg.data.eval_source) if source]
    return RunData(bundle.train, bundle.eval, files, bundle.report.as_dict(), bundle.train.total_steps)
