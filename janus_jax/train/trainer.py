"""The training loop shared by every objective: build, restore, step, log, evaluate, checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from ml_collections import ConfigDict

from janus_jax.model import Mistral, MistralConfig
from janus_jax.model.config import ARCHITECTURE_FIELDS
from janus_jax.model.reward import RewardModel, score_head
from janus_jax.sharding import batch_sharding, initialize_distributed, make_mesh, state_shardings
from janus_jax.train import data_setup, reference, tasks
from janus_jax.train.checkpoint import Checkpointer, abstract_with_shardings
from janus_jax.train.metrics import MetricsWriter, peak_flops_per_device, read_metrics, train_flops_per_token
from janus_jax.train.optimizer import make_optimizer
from janus_jax.train.step import make_eval_step, make_train_step, train_state_shardings

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised before any checkpoint is written when the loss or gradient norm is NaN/inf."""


def model_config(cfg: ConfigDict) -> MistralConfig:
    """The model section of a run config: a preset plus field overrides."""
    overrides = {k: v for k, v in cfg.model.items() if k not in ("preset", "init_from") and v is not None}
    if cfg.model.get("sliding_window", None) is None and "sliding_window" in cfg.model:
        overrides["sliding_window"] = None
    return MistralConfig.preset(cfg.model.preset, **overrides)


def build_module(cfg: ConfigDict, mcfg: MistralConfig, rngs: nnx.Rngs):
    """The network the objective trains: the causal LM, or the reward model for `rm`."""
    return RewardModel(mcfg, rngs=rngs) if cfg.objective == "rm" else Mistral(mcfg, rngs=rngs)


def _initial_params(cfg: ConfigDict, mcfg: MistralConfig, shardings, mesh):
    """Random init (seeded, created sharded), an HF directory, or a janus checkpoint.

    A reward model takes its backbone from `init_from` and a freshly initialised scalar head.
    """
    source = cfg.model.get("init_from")

    def init():
        return nnx.state(build_module(cfg, mcfg, nnx.Rngs(cfg.train.seed)), nnx.Param)

    if not source:
        return jax.jit(init, out_shardings=shardings)()
    backbone = _pretrained_params(source, mcfg, mesh)
    if cfg.objective != "rm":
        return backbone
    score_sh = shardings["score"]
    score = jax.jit(lambda: nnx.state(score_head(mcfg, nnx.Rngs(cfg.train.seed)), nnx.Param), out_shardings=score_sh)()
    flat = [(("model", *path), v) for path, v in nnx.to_flat_state(backbone)]
    flat += [(("score", *path), v) for path, v in nnx.to_flat_state(score)]
    return nnx.from_flat_state(flat)


def _pretrained_params(source: str, mcfg: MistralConfig, mesh):
    path = Path(source)
    if (path / "config.json").exists() or not path.exists():
        from janus_jax.hf_io import from_pretrained

        # The run's preset decides the sliding window: some public Mistral-7B-v0.2 configs carry a
        # wrong `sliding_window`; the execution fields are the run's own.
        keys = ("dtype", "scan_layers", "remat", "attention_impl", "sliding_window")
        model = from_pretrained(path, dtype=mcfg.param_dtype, mesh=mesh, **{k: getattr(mcfg, k) for k in keys})
    else:
        from janus_jax.train.checkpoint import load_model

        model = load_model(path, mesh=mesh)
    _check_architecture(model.config, mcfg, source)
    return nnx.state(model, nnx.Param)


def _check_architecture(loaded: MistralConfig, wanted: MistralConfig, source: str) -> None:
    """`model.init_from` must hold the architecture of the run's `model.preset`."""
    diff = {
        f: (getattr(loaded, f), getattr(wanted, f))
        for f in ARCHITECTURE_FIELDS
        if getattr(loaded, f) != getattr(wanted, f)
    }
    if diff:
        shown = ", ".join(f"{f}: {a} (init_from) vs {b} (preset)" for f, (a, b) in diff.items())
        raise ValueError(f"model.init_from={source} does not match model.preset: {shown}")


def _global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Each host holds its rows; the global array spans all hosts (pure function of the step)."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v) for k, v in sorted(local.items())
    }


def _last_logged(workdir: Path) -> dict[str, Any]:
    """The latest train and eval metrics already in metrics.jsonl (what a finished run reports on rerun)."""
    last: dict[str, Any] = {}
    for row in read_metrics(workdir):
        last.update(row)
    return last


def _truncate_metrics(workdir: Path, step: int) -> None:
    """After a resume, drop rows logged past the restored checkpoint; they are recomputed exactly."""
    rows = [r for r in read_metrics(workdir) if r["step"] <= step]
    path = workdir / "metrics.jsonl"
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@dataclasses.dataclass
class StateSpec:
    """What the train state looks like and where it lives, from abstract shapes only (no weights)."""

    graphdef: nnx.GraphDef
    param_shardings: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    shapes: Any  # {"params", "opt_state", "step"} as ShapeDtypeStructs
    shardings: Any


def state_spec(cfg: ConfigDict, mcfg: MistralConfig, mesh, total_steps: int) -> StateSpec:
    """The one construction of the train state's layout, shared by the trainer and janus-plan."""
    abstract_model = nnx.eval_shape(lambda: build_module(cfg, mcfg, nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
    param_sh = state_shardings(abstract_params, mesh)
    tx, schedule = make_optimizer(cfg.optimizer, total_steps)
    shapes = jax.eval_shape(
        lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)}, abstract_params
    )
    return StateSpec(graphdef, param_sh, tx, schedule, shapes, train_state_shardings(shapes, param_sh, tx, mesh))


def jit_train_step(spec: StateSpec, cfg: ConfigDict, objective, mesh, batch_sh, ref_graphdef=None, ref_sh=None):
    """The jitted step with explicit in/out shardings and the state donated."""
    step = make_train_step(
        spec.graphdef, objective, spec.tx, spec.schedule, int(cfg.train.grad_accum_steps), mesh, ref_graphdef
    )
    return jax.jit(
        step, in_shardings=(spec.shardings, batch_sh, ref_sh), out_shardings=(spec.shardings, None), donate_argnums=(0,)
    )


def train(cfg: ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or resume) the job described by `cfg` in `workdir`; returns the last logged metrics."""
    from janus_jax import manifest

    if "://" in str(workdir):
        raise ValueError(f"workdir {workdir}: use a shared filesystem path (NFS, Filestore, gcsfuse), not a URL")
    initialize_distributed()
    workdir = Path(workdir).absolute()
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        manifest.check_workdir(workdir, cfg)

    mesh = make_mesh(tuple(cfg.mesh.shape))
    mcfg = model_config(cfg)
    objective = tasks.get_objective(cfg)
    data = data_setup.build(cfg, mcfg)
    steps_per_epoch = data.train.steps_per_epoch
    total_steps = int(cfg.train.max_steps) if cfg.train.get("max_steps") else data.total_steps
    if total_steps <= 0:
        raise ValueError(f"the run has {total_steps} steps: check data size, batch size and num_epochs")
    if total_steps > data.total_steps:
        raise ValueError(
            f"train.max_steps={total_steps} exceeds the {data.total_steps} steps of "
            f"train.num_epochs={cfg.train.num_epochs} over the data; raise train.num_epochs"
        )

    if is_main:
        manifest.write_manifest(
            workdir,
            config=cfg,
            mesh=mesh,
            data_files=data.files,
            extra={"total_steps": total_steps, "data_report": data.report},
        )

    spec = state_spec(cfg, mcfg, mesh, total_steps)
    graphdef, param_sh, tx = spec.graphdef, spec.param_shardings, spec.tx
    state_shapes, state_sh = spec.shapes, spec.shardings

    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints, async_save=cfg.train.async_checkpoint)
    start = ckpt.latest_step()
    initial = None  # the init_from parameters, when this run starts from them (the DPO reference reuses them)
    if start is not None and start >= total_steps:
        # Rerunning a finished run (the same command twice, a sweep relaunched): nothing to train.
        ckpt.close()
        log.info("%s: the run already finished (checkpoint at step %d of %d)", workdir, start, total_steps)
        if is_main:
            manifest.finish_manifest(workdir, "completed")
        return _last_logged(workdir) if is_main else {}
    if start is not None:
        state, meta = ckpt.restore(start, abstract_with_shardings(state_shapes, state_sh))
        log.info("resumed from step %d (data position %d)", start, meta["data_step"])
        if is_main:
            _truncate_metrics(workdir, start)
    else:
        start = 0
        params = initial = _initial_params(cfg, mcfg, param_sh, mesh)
        init_opt = jax.jit(tx.init, out_shardings=state_sh["opt_state"])
        step0 = jax.device_put(jnp.zeros((), jnp.int32), state_sh["step"])
        state = {"params": params, "opt_state": init_opt(params), "step": step0}

    ref_graphdef, ref_params = _reference(cfg, mcfg, mesh, graphdef, param_sh, data, initial)
    del initial  # the state's copy is donated at the first step
    example = data.train.batch(start)
    batch_sh = {k: batch_sharding(mesh, v.ndim) for k, v in example.items()}
    ref_sh = None if ref_params is None else jax.tree.map(lambda x: x.sharding, ref_params)
    step_fn = jit_train_step(spec, cfg, objective, mesh, batch_sh, ref_graphdef, ref_sh)
    eval_fn = jax.jit(make_eval_step(graphdef, objective, mesh, ref_graphdef))
    writer = MetricsWriter(workdir, enabled=is_main)
    seq_len = int(cfg.data.seq_len)
    peak = cfg.train.get("peak_flops_per_device") or peak_flops_per_device()
    bar = _progress(is_main, start, total_steps)

    last: dict[str, Any] = _last_logged(workdir) if is_main else {}
    window_tokens, window_head, window_start = 0, 0, time.perf_counter()
    status = "failed"
    try:
        for step in range(start, total_steps):
            local = data.train.batch(step)
            window_tokens += tasks.real_tokens(local) * jax.process_count()
            window_head += tasks.head_positions(cfg.objective, local) * jax.process_count()
            state, metrics = step_fn(state, _global_batch(local, mesh), ref_params)
            done = step + 1
            if done % cfg.train.log_every == 0 or done == total_steps:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not all(math.isfinite(v) for v in values.values()):
                    raise NonFiniteLossError(
                        f"non-finite metrics at step {done}: {values}; stopping before any checkpoint of this state"
                    )
                elapsed = time.perf_counter() - window_start
                values["tokens_per_second"] = window_tokens / max(elapsed, 1e-9)
                if peak:
                    flops_per_token = train_flops_per_token(mcfg, seq_len, window_head / max(window_tokens, 1))
                    values["mfu"] = values["tokens_per_second"] * flops_per_token / (peak * jax.device_count())
                values["epoch"] = step / steps_per_epoch
                writer.write(done, values)
                last = {"step": done, **values}
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{values['tokens_per_second']:.0f}")
                window_tokens, window_head, window_start = 0, 0, time.perf_counter()
            periodic = bool(cfg.train.eval_every) and done % cfg.train.eval_every == 0
            if data.eval is not None and (periodic or done == total_steps):
                eval_metrics = evaluate(eval_fn, state["params"], data.eval, mesh, ref_params)
                writer.write(done, eval_metrics)
                last.update(eval_metrics)
            if done % cfg.train.checkpoint_every == 0 or done == total_steps:
                now = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not all(math.isfinite(v) for v in now.values()):
                    raise NonFiniteLossError(f"non-finite metrics at step {done}: {now}; no checkpoint written")
                ckpt.save(done, state, {"data_step": done, "model_config": _config_dict(mcfg)})
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        bar.close()
        ckpt.close()
        writer.close()
        if is_main:
            manifest.finish_manifest(workdir, status)
    if is_main:
        _plot_loss(workdir)
    return last


def _reference(cfg, mcfg, mesh, graphdef, param_sh, data, initial=None):
    """DPO's reference: (graphdef, frozen params) in `model` mode; in `precomputed` mode the data
    pipelines are wrapped to carry reference log-probs and (None, None) is returned.

    `initial` are the init_from parameters when already loaded (a fresh run); a resumed run loads them
    again, since its state holds trained parameters.
    """
    if cfg.objective != "dpo":
        return None, None
    mode = cfg.dpo.reference
    if mode not in ("model", "precomputed"):
        raise ValueError(f"dpo.reference={mode!r}; expected 'model' or 'precomputed'")
    if initial is None:
        initial = _initial_params(cfg, mcfg, param_sh, mesh)
    if mode == "model":
        return graphdef, reference.frozen_copy(initial, cfg.dpo.reference_dtype)
    path = Path(cfg.dpo.reference_logps) if cfg.dpo.reference_logps else reference.default_path(cfg.data.source)
    expected = {"model_hash": reference.params_hash(initial)}
    for split in ("train", "eval"):
        pipeline = getattr(data, split)
        if pipeline is not None:
            expected[f"{split}_data_hash"] = reference.data_hash(pipeline)
            setattr(data, split, reference.PrecomputedReference(path, split, pipeline, expected))
    log.info("DPO reference log-probs from %s (hashes checked)", path)
    return None, None


def evaluate(eval_fn, params, eval_data, mesh, ref_params=None) -> dict[str, float]:
    """Exact average over the held-out split (sums over batches, one division)."""
    loss_sum, weight, sums = 0.0, 0.0, {}
    for i in range(eval_data.steps_per_epoch):
        ls, w, ms = jax.device_get(eval_fn(params, _global_batch(eval_data.batch(i), mesh), ref_params))
        loss_sum, weight = loss_sum + float(ls), weight + float(w)
        for k, v in ms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    weight = max(weight, 1.0)
    out = {f"eval/{k}": v / weight for k, v in sums.items()}
    out["eval/loss"] = loss_sum / weight
    return out


def _config_dict(mcfg: MistralConfig) -> dict:
    return dataclasses.asdict(mcfg)


def _progress(enabled: bool, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="train", dynamic_ncols=True)


def _plot_loss(workdir: Path) -> Path | None:
    """loss.png beside metrics.jsonl: train loss per step, eval loss as points."""
    rows = read_metrics(workdir)
    train_rows = [r for r in rows if isinstance(r.get("loss"), float)]
    if not train_rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train loss", color="#1f77b4")
    eval_rows = [r for r in rows if isinstance(r.get("eval/loss"), float)]
    if eval_rows:
        ax.plot(
            [r["step"] for r in eval_rows],
            [r["eval/loss"] for r in eval_rows],
            "o-",
            label="eval loss",
            color="#d62728",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(workdir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = workdir / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out
