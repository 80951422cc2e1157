"""`janus-plan`: will a training job fit in device memory? Ask the compiler before queuing.

The run's train step is compiled ahead of time on abstract inputs (no weights are loaded or
allocated) for the mesh of each target, and XLA's buffer assignment gives the per-device bytes.
A CPU process has as many devices as `--xla_force_host_platform_device_count` said at start-up, so
each target is planned in its own subprocess with that flag.

    janus-plan --config=configs/sft.py:janus_7b --targets=8xH100,v4-32,v5e-64

Target names follow the cloud conventions: TPU v4 and v5p names count TensorCores (2 per chip,
one JAX device per chip), v5e and v6e names count chips; `8xH100` is 8 GPUs. A target may pin its
mesh as `NAME:DATAxFSDPxTENSOR` (for example `v5e-64:1x16x4`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

GIB = 1024**3

# name -> (memory per JAX device in GiB, how many chips one unit of the name's number stands for)
TPU_KINDS: dict[str, tuple[float, float]] = {
    "v4": (32, 0.5),  # v4-32 = 32 TensorCores = 16 chips of 32 GiB HBM
    "v5p": (95, 0.5),  # v5p-128 = 64 chips of 95 GiB
    "v5e": (16, 1),  # v5e-64 = 64 chips of 16 GiB
    "v6e": (32, 1),  # v6e-64 = 64 chips of 32 GiB
}
GPU_KINDS: dict[str, float] = {"H100": 80, "A100": 80, "H200": 141}


@dataclasses.dataclass(frozen=True)
class Target:
    """A device pool: how many JAX devices, each with how much memory, and an optional fixed mesh."""

    name: str
    num_devices: int
    memory_bytes: int
    mesh_shape: tuple[int, int, int] | None = None


def parse_target(text: str) -> Target:
    """`v4-32`, `v5e-64`, `8xH100`, each optionally followed by `:DATAxFSDPxTENSOR`."""
    name, _, mesh_text = text.strip().partition(":")
    mesh = None
    if mesh_text:
        try:
            mesh = tuple(int(x) for x in mesh_text.lower().split("x"))
        except ValueError:
            mesh = ()
        if len(mesh) != 3 or min(mesh) < 1:
            raise ValueError(f"target {text!r}: the mesh after ':' must be three positive sizes DATAxFSDPxTENSOR")
    gpu = re.fullmatch(r"(\d+)x([A-Za-z]\d+)", name)
    tpu = re.fullmatch(r"(v\d+[a-z]?)-(\d+)", name)
    if gpu and gpu.group(2).upper() in GPU_KINDS:
        count, gib = int(gpu.group(1)), GPU_KINDS[gpu.group(2).upper()]
    elif tpu and tpu.group(1) in TPU_KINDS:
        gib, chips_per_unit = TPU_KINDS[tpu.group(1)]
        count = int(int(tpu.group(2)) * chips_per_unit)
    else:
        known = [f"{k}-N" for k in TPU_KINDS] + [f"Nx{k}" for k in GPU_KINDS]
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(known)}")
    if count < 1:
        raise ValueError(f"target {name!r} has no devices")
    if mesh is not None and math.prod(mesh) != count:
        raise ValueError(f"target {text!r}: mesh {mesh} has {math.prod(mesh)} devices, {name} has {count}")
    return Target(name, count, int(gib * GIB), mesh)


def choose_mesh(cfg: ConfigDict, num_devices: int) -> tuple[int, int, int]:
    """The run's `mesh.shape` on `num_devices`; when the batch does not split over data×fsdp (32
    sequences on 64 chips), the leftover factor goes to `tensor`, as one would do by hand."""
    from janus_jax.sharding import resolve_mesh_shape

    data, fsdp, tensor = resolve_mesh_shape(tuple(cfg.mesh.shape), num_devices)
    rows = int(cfg.train.global_batch_size) // int(cfg.train.grad_accum_steps)
    if rows % (data * fsdp) == 0:
        return data, fsdp, tensor
    batch_devices = math.gcd(rows, data * fsdp)
    new_data = math.gcd(data, batch_devices)
    new_fsdp = batch_devices // new_data
    return new_data, new_fsdp, num_devices // (new_data * new_fsdp)


def build_train_step(cfg: ConfigDict, mesh, total_steps: int = 1000):
    """The trainer's own construction (`janus_jax.train.run.build_run`), on abstract values only."""
    from janus_jax.train.run import build_run

    return build_run(cfg, mesh=mesh, with_data=False, total_steps=total_steps)


def _bytes_per_device(shapes, shardings) -> int:
    """Exact bytes of one device's shards of a tree of arrays."""
    total = 0
    for s, sh in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)):
        total += math.prod(sh.shard_shape(s.shape)) * jnp.dtype(s.dtype).itemsize
    return total


def attention_scores_bytes(run) -> int:
    """The XLA path's largest float32 score buffer per device: its last query block against every key
    (absent with flash attention)."""
    from janus_jax.model.attention import causal_blocks_for

    data, fsdp, tensor = (run.mesh.shape[a] for a in ("data", "fsdp", "tensor"))
    cfg = run.cfg
    rows = int(cfg.train.global_batch_size) // int(cfg.train.grad_accum_steps)
    rows *= 2 if run.objective.pairs else 1  # chosen and rejected in one forward
    heads = run.model_config.num_attention_heads
    seq = int(cfg.data.seq_len)
    block = math.ceil(seq / causal_blocks_for(seq))
    return math.ceil(rows / (data * fsdp)) * math.ceil(heads / tensor) * block * seq * 4


def lower_abstract(run, cfg: ConfigDict | None = None) -> jax.stages.Lowered:
    """The step lowered on abstract state, batch and reference (no array is allocated)."""
    del cfg  # the run carries its config
    return run.lower()


def plan_here(cfg: ConfigDict, mesh_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Compile the step for `mesh_shape` on this process's devices; per-device bytes from XLA."""
    from janus_jax.sharding import make_mesh

    cfg = ConfigDict(cfg.to_dict())
    # Fused kernels (cuDNN) do not compile for CPU devices: plan the XLA attention path, and report
    # its [rows, heads, T, T] score buffer so that GPU users can see what flash attention saves.
    cfg.model.attention_impl = "xla"
    mesh = make_mesh(mesh_shape)
    run = build_train_step(cfg, mesh)
    start = time.perf_counter()
    compiled = lower_abstract(run, cfg).compile()
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError(f"the {jax.default_backend()} backend reports no memory analysis for compiled programs")
    state_bytes = _bytes_per_device(run.state_shapes, run.state_shardings)
    ref = run.reference
    ref_bytes = 0 if ref is None else _bytes_per_device(ref.shapes, ref.shardings)
    batch = run.batch_shapes
    batch_bytes = sum(math.prod(s.sharding.shard_shape(s.shape)) * jnp.dtype(s.dtype).itemsize for s in batch.values())
    peak = stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
    peak += stats.temp_size_in_bytes
    return {
        "mesh": dict(zip(("data", "fsdp", "tensor"), mesh_shape)),
        "num_params": run.num_params,
        "state_bytes": state_bytes,
        "reference_bytes": ref_bytes,
        "batch_bytes": batch_bytes,
        "temp_bytes": int(stats.temp_size_in_bytes),
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
        "total_bytes": int(peak),
        "attention_scores_bytes": attention_scores_bytes(run),
        "compile_seconds": round(compile_s, 1),
    }


# ---- one subprocess per target -------------------------------------------------------------------


def _worker() -> None:
    """Subprocess entry: read {config, mesh} from stdin, print the plan as JSON on the last line."""
    request = json.loads(sys.stdin.read())
    result = plan_here(ConfigDict(request["config"]), tuple(request["mesh"]))
    print(json.dumps(result))


def _subprocess_env(num_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={num_devices}"])
    env["JAX_PLATFORMS"] = "cpu"  # fake devices, even on a machine with accelerators
    return env


def plan_target(cfg: ConfigDict, target: Target) -> dict[str, Any]:
    """Plan one target in a subprocess with `target.num_devices` fake CPU devices."""
    mesh = target.mesh_shape or choose_mesh(cfg, target.num_devices)
    row: dict[str, Any] = {"target": target.name, "devices": target.num_devices, "capacity_bytes": target.memory_bytes}
    request = json.dumps({"config": json.loads(cfg.to_json()), "mesh": list(mesh)})
    proc = subprocess.run(
        [sys.executable, "-c", "from janus_jax.plan import _worker; _worker()"],
        input=request,
        capture_output=True,
        text=True,
        env=_subprocess_env(target.num_devices),
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        error = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        row.update(mesh=dict(zip(("data", "fsdp", "tensor"), mesh)), status="ERROR", error=" | ".join(error[-3:]))
        return row
    row.update(json.loads(lines[-1]))
    row["headroom_bytes"] = target.memory_bytes - row["total_bytes"]
    row["status"] = "FITS" if row["headroom_bytes"] >= 0 else "DOES NOT FIT"
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """One line per target; sizes in GiB per device."""

    def gib(x: float) -> str:
        return f"{x / GIB:.1f}"

    header = ("target", "devices", "mesh d/f/t", "state", "temp", "total", "capacity", "headroom", "verdict")
    lines = [header]
    for r in rows:
        mesh = "/".join(str(r["mesh"][k]) for k in ("data", "fsdp", "tensor"))
        if r["status"] == "ERROR":
            lines.append((r["target"], str(r["devices"]), mesh, "-", "-", "-", gib(r["capacity_bytes"]), "-", "ERROR"))
            continue
        state = r["state_bytes"] + r["reference_bytes"]
        headroom = f"{gib(r['headroom_bytes'])} ({100 * r['headroom_bytes'] / r['capacity_bytes']:+.0f}%)"
        lines.append(
            (
                r["target"],
                str(r["devices"]),
                mesh,
                gib(state),
                gib(r["temp_bytes"]),
                gib(r["total_bytes"]),
                gib(r["capacity_bytes"]),
                headroom,
                r["status"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    text += [f"{r['target']}: {r['error']}" for r in rows if r["status"] == "ERROR"]
    return "\n".join(text)


def plan_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the numbers do and do not include."""
    notes = [
        "bytes per device are XLA's buffer assignment for the same SPMD program compiled for CPU devices; "
        "TPU and GPU compilers fuse and schedule differently, so keep some headroom"
    ]
    for r in rows:
        if re.match(r"\d+x", r["target"]) and r["status"] != "ERROR":
            notes.append(
                f"{r['target']}: attention was planned on the XLA path; with cuDNN flash attention (the default on "
                f"GPUs) float32 score blocks of up to {r['attention_scores_bytes'] / GIB:.1f} GiB per device "
                "counted in temp are not materialized"
            )
    return notes


def main() -> None:
    """`janus-plan --config=configs/FILE.py:PRESET [--config.KEY=VALUE ...] --targets=8xH100,v4-32,v5e-64`."""
    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Run config, as for janus-train", lock_config=True)
    targets = flags.DEFINE_list("targets", ["8xH100", "v4-32", "v5e-64"], "Device pools, e.g. v4-32,v5e-64:1x16x4")

    def run(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:
            pools = [parse_target(t) for t in targets.value]
        except ValueError as e:
            raise app.UsageError(str(e)) from e
        cfg = config.value
        print(
            f"planning {cfg.objective} with model {cfg.model.preset}, seq {cfg.data.seq_len}, global batch "
            f"{cfg.train.global_batch_size}, remat {cfg.model.remat} (abstract: no weights are loaded)",
            flush=True,
        )
        rows = []
        for pool in pools:
            rows.append(plan_target(cfg, pool))
            r = rows[-1]
            detail = r.get("error") or f"{r['total_bytes'] / GIB:.1f} GiB/device, compiled in {r['compile_seconds']} s"
            print(f"  {pool.name}: {r['status']} ({detail})", flush=True)
        print(format_table(rows))
        for note in plan_notes(rows):
            print(f"note: {note}")
        print(json.dumps({"config": f"{cfg.objective}/{cfg.model.preset}", "targets": rows}))
        if any(r["status"] == "ERROR" for r in rows):
            sys.exit(1)

    flags.mark_flags_as_required(["config"])
    app.run(run)


if __name__ == "__main__":
    main()
