"""`build_run(cfg)`: everything a training run is made of, built one way.

The training loop, `janus-plan`, `janus-precompute-ref` and `bench/train_throughput.py` all call it, so
what is planned and benchmarked is what trains: the model config, the objective, the mesh, the state's
layout and shardings, the optimizer, the jitted train and eval steps, the global batch layout, and the
reference policy when the objective needs one. `build_run(cfg, with_data=False)` reads no data and
loads no weights (abstract shapes only), for planning and benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from janus_jax.data.packing import SFT_KEYS
from janus_jax.model import MistralConfig
from janus_jax.model.config import ARCHITECTURE_FIELDS
from janus_jax.model.reward import score_head
from janus_jax.objectives import Objective, get_objective
from janus_jax.sharding import batch_sharding, make_mesh, state_shardings
from janus_jax.train import data_setup, reference
from janus_jax.train.checkpoint import abstract_with_shardings
from janus_jax.train.optimizer import make_optimizer
from janus_jax.train.step import make_eval_step, make_train_step, train_state_shardings

log = logging.getLogger(__name__)

# Execution fields of the run's model section that a loaded `init_from` model takes from the run.
_EXECUTION_FIELDS = ("dtype", "scan_layers", "remat", "attention_impl", "sliding_window")


def model_config(cfg: ConfigDict) -> MistralConfig:
    """The model section of a run config: a preset plus field overrides."""
    overrides = {k: v for k, v in cfg.model.items() if k not in ("preset", "init_from") and v is not None}
    if cfg.model.get("sliding_window", None) is None and "sliding_window" in cfg.model:
        overrides["sliding_window"] = None
    return MistralConfig.preset(cfg.model.preset, **overrides)


def batch_layout(cfg: ConfigDict, objective: Objective) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Shape and dtype of every array of one global batch, as janus_jax.data builds it."""
    rows, seq = int(cfg.train.global_batch_size), int(cfg.data.seq_len)
    dtype = {"loss_weights": jnp.float32}
    if not objective.pairs:
        return {k: ((rows, seq), dtype.get(k, jnp.int32)) for k in SFT_KEYS}
    out = {f"{side}_{k}": ((rows, seq), dtype.get(k, jnp.int32)) for side in ("chosen", "rejected") for k in SFT_KEYS}
    out.update({f"{side}_lengths": ((rows,), jnp.int32) for side in ("chosen", "rejected")})
    out.update(prompt_lengths=((rows,), jnp.int32), pair_weights=((rows,), jnp.float32), pair_ids=((rows,), jnp.int32))
    if reference_mode(cfg, objective) == "precomputed":
        out.update(ref_chosen_logps=((rows,), jnp.float32), ref_rejected_logps=((rows,), jnp.float32))
    return out


def reference_mode(cfg: ConfigDict, objective: Objective) -> str | None:
    """`model` (a frozen copy evaluated in the step), `precomputed` (log-probs in the batch), or None."""
    if not objective.needs_reference:
        return None
    mode = cfg[objective.config_section].reference
    if mode not in ("model", "precomputed"):
        raise ValueError(f"{objective.config_section}.reference={mode!r}; expected 'model' or 'precomputed'")
    return mode


def check_batch_fits_mesh(cfg: ConfigDict, mesh: Mesh) -> None:
    """The global batch's rows split evenly over the data-parallel devices (data x fsdp)."""
    rows = int(cfg.train.global_batch_size)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if rows % shards:
        raise ValueError(
            f"the global batch of {rows} (train.global_batch_size) does not split over {shards} data shards "
            f"(mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}); use a batch that is a multiple of "
            f"{shards}, or a mesh with fewer data shards (more tensor parallelism)"
        )


@dataclasses.dataclass
class Reference:
    """The frozen reference policy (`model` mode): same graph as the policy, its own dtype."""

    graphdef: nnx.GraphDef
    shapes: Any
    shardings: Any


@dataclasses.dataclass
class Run:
    cfg: ConfigDict
    model_config: MistralConfig
    objective: Objective
    mesh: Mesh
    total_steps: int
    data: data_setup.RunData | None
    graphdef: nnx.GraphDef
    param_shardings: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    state_shapes: Any  # {"params", "opt_state", "step"} as ShapeDtypeStructs
    state_shardings: Any
    batch_shapes: dict[str, jax.ShapeDtypeStruct]  # the global batch, with shardings
    reference: Reference | None
    step_fn: Any  # jitted (state, batch, ref_params) -> (state, metrics), state donated
    eval_fn: Any  # jitted (params, batch, ref_params) -> (loss_sum, weight, metric_sums)

    @property
    def num_params(self) -> int:
        return sum(math.prod(p.shape) for p in jax.tree.leaves(self.state_shapes["params"]))

    def abstract_state(self):
        return abstract_with_shardings(self.state_shapes, self.state_shardings)

    def abstract_reference(self):
        ref = self.reference
        return None if ref is None else abstract_with_shardings(ref.shapes, ref.shardings)

    def lower(self) -> jax.stages.Lowered:
        """The train step lowered on abstract state, batch and reference (no array is allocated)."""
        return self.step_fn.lower(self.abstract_state(), self.batch_shapes, self.abstract_reference())

    def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Each host holds its rows; the global array spans all hosts (a pure function of the step)."""
        missing = set(self.batch_shapes) ^ set(local)
        if missing:
            raise ValueError(f"batch keys {sorted(local)} differ from the run's layout at {sorted(missing)}")
        return {
            k: jax.make_array_from_process_local_data(self.batch_shapes[k].sharding, v, self.batch_shapes[k].shape)
            for k, v in sorted(local.items())
        }

    def initial_params(self):
        """Random init (seeded, created sharded), or the weights of `model.init_from`.

        A reward model from a reward model (the paper's second RM stage) restores the backbone and the
        scalar head; from a causal LM it takes the backbone and a freshly initialised head. A policy from
        a reward model takes its backbone.
        """
        cfg, mcfg = self.cfg, self.model_config
        build = self.objective.build_model
        init = jax.jit(
            lambda: nnx.state(build(mcfg, rngs=nnx.Rngs(cfg.train.seed)), nnx.Param),
            out_shardings=self.param_shardings,
        )
        source = cfg.model.get("init_from")
        if not source:
            return init()
        from janus_jax.load import config_of, load_model

        loaded = load_model(
            source,
            mesh=self.mesh,
            param_dtype=mcfg.param_dtype,
            **{k: getattr(mcfg, k) for k in _EXECUTION_FIELDS},
        )
        _check_architecture(config_of(loaded), mcfg, source)
        loaded_params = nnx.state(loaded, nnx.Param)
        wanted_keys = set(self.param_shardings.keys())
        if set(loaded_params.keys()) == wanted_keys:
            what = "backbone and scalar head" if "score" in wanted_keys else "weights"
            log.info("model.init_from=%s: %s restored", source, what)
            return loaded_params
        if "score" in wanted_keys:  # a reward model from a policy: its backbone plus a fresh head
            log.info("model.init_from=%s: a causal LM; its backbone and a new scalar head", source)
            head = jax.jit(
                lambda: nnx.state(score_head(mcfg, nnx.Rngs(cfg.train.seed)), nnx.Param),
                out_shardings=self.param_shardings["score"],
            )()
            flat = [(("model", *path), v) for path, v in nnx.to_flat_state(loaded_params)]
            flat += [(("score", *path), v) for path, v in nnx.to_flat_state(head)]
            return nnx.from_flat_state(flat)
        # a policy from a reward model: its backbone
        return loaded_params["model"]

    def fresh_state(self, params) -> dict[str, Any]:
        init_opt = jax.jit(self.tx.init, out_shardings=self.state_shardings["opt_state"])
        step0 = jax.device_put(jnp.zeros((), jnp.int32), self.state_shardings["step"])
        return {"params": params, "opt_state": init_opt(params), "step": step0}

    def reference_params(self, workdir: str | Path | None, initial=None):
        """The frozen policy's parameters (`model` mode), or None.

        In `precomputed` mode the data pipelines are wrapped to carry reference log-probs (their file's
        hashes are checked against `initial` and the data) and None is returned. `initial` are the
        init_from parameters when already loaded (a fresh run); a resumed run loads them again.
        """
        mode = reference_mode(self.cfg, self.objective)
        if mode is None:
            return None
        section = self.cfg[self.objective.config_section]
        initial = self.initial_params() if initial is None else initial
        if mode == "model":
            return reference.frozen_copy(initial, section.reference_dtype)
        if not section.reference_logps and workdir is None:
            raise ValueError(f"{self.objective.config_section}.reference_logps is not set and there is no workdir")
        path = section.reference_logps or reference.default_path(workdir)  # local or gs://
        expected = {"model_hash": reference.params_hash(initial)}
        for split in ("train", "eval"):
            pipeline = getattr(self.data, split)
            if pipeline is not None:
                expected[f"{split}_data_hash"] = reference.data_hash(pipeline)
                setattr(self.data, split, reference.PrecomputedReference(path, split, pipeline, expected))
        log.info("reference log-probs from %s (hashes checked)", path)
        return None


def _check_architecture(loaded: MistralConfig, wanted: MistralConfig, source: str) -> None:
    """`model.init_from` must hold the architecture of the run's `model.preset`."""
    pairs = {f: (getattr(loaded, f), getattr(wanted, f)) for f in ARCHITECTURE_FIELDS}
    diff = {f: (a, b) for f, (a, b) in pairs.items() if a != b}
    if diff:
        shown = ", ".join(f"{f}: {a} (init_from) vs {b} (preset)" for f, (a, b) in diff.items())
        raise ValueError(f"model.init_from={source} does not match model.preset: {shown}")


def build_run(
    cfg: ConfigDict, *, mesh: Mesh | None = None, with_data: bool = True, total_steps: int | None = None
) -> Run:
    """Everything a run is made of (see the module docstring).

    With data, the total step count comes from the data and `train.max_steps`; without, from
    `total_steps` (default `train.max_steps` or 1000), which only shapes the learning-rate schedule.
    """
    objective = get_objective(cfg.objective)
    mcfg = model_config(cfg)
    mesh = mesh or make_mesh(tuple(cfg.mesh.shape))
    check_batch_fits_mesh(cfg, mesh)
    data = data_setup.build(cfg, mcfg, objective) if with_data else None
    if data is not None:
        total_steps = _total_steps(cfg, data)
    elif total_steps is None:
        total_steps = int(cfg.train.get("max_steps") or 1000)

    abstract_params = nnx.state(nnx.eval_shape(lambda: objective.build_model(mcfg, rngs=nnx.Rngs(0))), nnx.Param)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: objective.build_model(mcfg, rngs=nnx.Rngs(0))))
    param_sh = state_shardings(abstract_params, mesh)
    tx, schedule = make_optimizer(cfg.optimizer, total_steps)
    state_shapes = jax.eval_shape(
        lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)}, abstract_params
    )
    state_sh = train_state_shardings(state_shapes, param_sh, tx, mesh)
    batch_shapes = {
        k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))
        for k, (shape, dtype) in batch_layout(cfg, objective).items()
    }

    ref = None
    if reference_mode(cfg, objective) == "model":
        ref_dtype = jnp.dtype(cfg[objective.config_section].reference_dtype)
        ref_shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, ref_dtype), abstract_params)
        ref = Reference(graphdef, ref_shapes, param_sh)

    loss = objective.bound_loss(cfg)
    ref_graphdef = None if ref is None else ref.graphdef
    step = make_train_step(graphdef, loss, tx, schedule, int(cfg.train.grad_accum_steps), mesh, ref_graphdef)
    batch_sh = {k: v.sharding for k, v in batch_shapes.items()}
    ref_sh = None if ref is None else ref.shardings
    step_fn = jax.jit(
        step, in_shardings=(state_sh, batch_sh, ref_sh), out_shardings=(state_sh, None), donate_argnums=(0,)
    )
    eval_fn = jax.jit(make_eval_step(graphdef, loss, mesh, ref_graphdef))
    return Run(
        cfg, mcfg, objective, mesh, total_steps, data, graphdef, param_sh, tx, schedule,
        state_shapes, state_sh, batch_shapes, ref, step_fn, eval_fn,
    )  # fmt: skip


def _total_steps(cfg: ConfigDict, data: data_setup.RunData) -> int:
    total = int(cfg.train.max_steps) if cfg.train.get("max_steps") else data.total_steps
    if total <= 0:
        raise ValueError(f"the run has {total} steps: check data size, batch size and num_epochs")
    if total > data.total_steps:
        raise ValueError(
            f"train.max_steps={total} exceeds the {data.total_steps} steps of "
            f"train.num_epochs={cfg.train.num_epochs} over the data; raise train.num_epochs"
        )
    return total
