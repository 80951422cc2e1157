"""The training loop shared by every objective: build the run, restore or start, step, then hooks."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
from etils import epath
from ml_collections import ConfigDict

from janus_jax import manifest
from janus_jax.paths import absolute
from janus_jax.prompts import template_of
from janus_jax.sharding import initialize_distributed
from janus_jax.train import hooks
from janus_jax.train.checkpoint import Checkpointer
from janus_jax.train.hooks import NonFiniteLossError, StepContext
from janus_jax.train.metrics import last_logged, peak_flops_per_device, truncate_metrics
from janus_jax.train.run import Run, build_run

__all__ = ["NonFiniteLossError", "train"]

log = logging.getLogger(__name__)


def train(cfg: ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Run (or resume) the job described by `cfg` in `workdir`; returns the last logged metrics.

    `workdir` is a local folder (shared by all hosts of a multi-host job) or a `gs://` URL.
    """
    initialize_distributed()
    workdir = absolute(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        manifest.check_workdir(workdir, cfg)
    run = build_run(cfg)
    extra = {"total_steps": run.total_steps, "data_report": run.data.report}
    if is_main:
        manifest.write_manifest(workdir, config=cfg, mesh=run.mesh, data_files=run.data.files, extra=extra)

    status, ends = "failed", {}
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints, async_save=cfg.train.async_checkpoint)
    run_hooks: list[hooks.Hook] = []
    try:
        state, start, initial, ends["checkpoint_problems"] = _restore_or_start(run, ckpt, workdir, is_main)
        ref_params = run.reference_params(workdir, initial) if start < run.total_steps else None
        del initial  # the state's copy is donated at the first step
        metrics_log = hooks.MetricsLog(workdir, is_main, last_logged(workdir) if is_main else {})
        run_hooks = _hooks(run, workdir, ckpt, metrics_log, start, ref_params, is_main)
        for step in range(start, run.total_steps):
            local = run.data.train.batch(step)
            state, metrics = run.step_fn(state, run.global_batch(local), ref_params)
            ctx = StepContext(step + 1, run.total_steps, state, metrics, local)
            for hook in run_hooks:
                hook.after_step(ctx)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        for hook in run_hooks:
            hook.close()
        ckpt.close()
        if is_main:
            manifest.finish_manifest(workdir, status, **{k: v for k, v in ends.items() if v})
    return metrics_log.last if is_main else {}


def _restore_or_start(run: Run, ckpt: Checkpointer, workdir: epath.Path, is_main: bool):
    """(state, first step, init_from params when freshly loaded else None, unreadable-checkpoint notes)."""
    restored = ckpt.restore_newest_readable(run.abstract_state())
    if restored is None:
        initial = run.initial_params()
        return run.fresh_state(initial), 0, initial, []
    step, state, meta, problems = restored
    if step >= run.total_steps:
        log.info("%s: the run already finished (checkpoint at step %d of %d)", workdir, step, run.total_steps)
    else:
        log.info("resumed from step %d (data position %d)", step, meta["data_step"])
    if is_main:
        truncate_metrics(workdir, step)
    return state, step, None, problems


def checkpoint_meta(run: Run) -> dict[str, Any]:
    """What a checkpoint records beside the state: the model config and the prompt template it trained on."""
    return {"model_config": dataclasses.asdict(run.model_config), "template": template_of(run.cfg)}


def _hooks(run: Run, workdir: epath.Path, ckpt, metrics_log, start: int, ref_params, is_main: bool) -> list[hooks.Hook]:
    """In order: stop on NaN before anything is written, log, evaluate, checkpoint, plot."""
    t = run.cfg.train
    peak = t.get("peak_flops_per_device") or peak_flops_per_device()
    return [
        hooks.NonFiniteGuard(t.log_every, t.checkpoint_every),
        hooks.LogProgress(metrics_log, t.log_every, start=start, run=run, peak_flops=peak, enabled=is_main),
        hooks.PeriodicEval(metrics_log, t.eval_every, run, ref_params),
        hooks.SaveCheckpoint(ckpt, t.checkpoint_every, checkpoint_meta(run)),
        hooks.PlotLoss(workdir, is_main),
        metrics_log,
    ]
