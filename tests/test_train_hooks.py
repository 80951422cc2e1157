"""Each hook of the training loop, alone, on stand-in runs (no model, no compile)."""

from __future__ import annotations

import json
import types

import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax.objectives import REGISTRY
from janus_jax.train import hooks
from janus_jax.train.metrics import read_metrics


def _ctx(step, total=10, loss=1.0, batch=None, state=None):
    metrics = {"loss": jnp.asarray(loss), "grad_norm": jnp.asarray(0.5)}
    batch = batch if batch is not None else {"segment_ids": np.ones((2, 4)), "loss_weights": np.ones((2, 4))}
    return hooks.StepContext(step, total, state or {"params": "p"}, metrics, batch)


def _run(total=10, eval_data=None):
    cfg = types.SimpleNamespace(data=types.SimpleNamespace(seq_len=4))
    data = types.SimpleNamespace(train=types.SimpleNamespace(steps_per_epoch=5), eval=eval_data)
    from janus_jax.model import MistralConfig

    return types.SimpleNamespace(cfg=cfg, objective=REGISTRY["sft"], model_config=MistralConfig.tiny(),
                                 data=data, total_steps=total)


def test_context_is_due_every_n_steps_and_at_the_end_and_fetches_metrics_once(monkeypatch):
    ctx = _ctx(3)
    assert ctx.due(3) and not ctx.due(2) and not ctx.due(0)
    assert _ctx(10).due(0) and _ctx(10).due(7)
    calls = []
    monkeypatch.setattr(hooks.jax, "device_get", lambda x: calls.append(1) or x)
    assert ctx.values() == ctx.values() == {"loss": 1.0, "grad_norm": 0.5}
    assert len(calls) == 1


def test_non_finite_guard_stops_at_logging_or_checkpoint_steps_only():
    guard = hooks.NonFiniteGuard(log_every=5, checkpoint_every=4)
    guard.after_step(_ctx(3, loss=float("nan")))  # neither logged nor saved: not looked at
    with pytest.raises(hooks.NonFiniteLossError, match="step 4"):
        guard.after_step(_ctx(4, loss=float("inf")))
    with pytest.raises(hooks.NonFiniteLossError, match="step 5"):
        guard.after_step(_ctx(5, loss=float("nan")))
    guard.after_step(_ctx(5, loss=2.0))


def test_log_progress_writes_every_n_steps_with_throughput_and_epoch(tmp_path):
    log = hooks.MetricsLog(tmp_path, enabled=True, previous={})
    hook = hooks.LogProgress(log, 2, start=0, run=_run(total=3), peak_flops=1e12, enabled=False)
    for step in (1, 2, 3):
        hook.after_step(_ctx(step, total=3, loss=float(step)))
    hook.close()
    log.close()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [2, 3]
    assert rows[0]["loss"] == 2.0 and rows[0]["epoch"] == pytest.approx(0.2)
    assert rows[0]["tokens_per_second"] > 0 and rows[0]["mfu"] > 0
    assert log.last["step"] == 3 and log.last["loss"] == 3.0


def test_periodic_eval_runs_when_due_and_only_with_an_eval_split(tmp_path, monkeypatch):
    log = hooks.MetricsLog(tmp_path, enabled=True, previous={})
    seen = []
    monkeypatch.setattr(hooks, "evaluate", lambda run, params, ref: seen.append(params) or {"eval/loss": 0.25})
    hooks.PeriodicEval(log, 0, _run(eval_data=None), None).after_step(_ctx(10))
    assert seen == []
    hook = hooks.PeriodicEval(log, 4, _run(eval_data=object()), None)
    for step in range(1, 11):
        hook.after_step(_ctx(step))
    assert len(seen) == 3  # steps 4, 8 and the last
    assert [r["step"] for r in read_metrics(tmp_path)] == [4, 8, 10]


def test_save_checkpoint_every_n_steps_and_at_the_end_with_the_data_position():
    saved = []
    ckpt = types.SimpleNamespace(save=lambda step, state, meta: saved.append((step, meta)))
    hook = hooks.SaveCheckpoint(ckpt, 4, {"model_config": {"vocab_size": 7}, "template": "chatml"})
    for step in range(1, 11):
        hook.after_step(_ctx(step))
    meta = {"model_config": {"vocab_size": 7}, "template": "chatml"}
    assert saved == [(s, {"data_step": s, **meta}) for s in (4, 8, 10)]


def test_plot_loss_draws_after_the_last_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 3.0 / s}) + "\n" for s in (1, 2, 3))
        + json.dumps({"step": 3, "eval/loss": 1.5}) + "\n"
    )
    hook = hooks.PlotLoss(tmp_path, enabled=True)
    hook.after_step(_ctx(2, total=3))
    assert not (tmp_path / "loss.png").exists()
    hook.after_step(_ctx(3, total=3))
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
