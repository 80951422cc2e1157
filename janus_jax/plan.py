"""`janus-plan`: will a training job fit in device memory? Ask the compiler before queuing.

The run's train step is compiled ahead of time on abstract inputs (no weights are loaded or
allocated) for the mesh of each target. TPU targets are compiled by the TPU compiler itself (libtpu
compiles for any slice from a CPU-only machine, janus_jax.tpu_plan): its buffer assignment, its cost
analysis and a roofline from the chip's peak numbers. GPU targets are compiled for as many fake CPU
devices (`--xla_force_host_platform_device_count`, set at start-up, so each target is planned in its
own subprocess): the same SPMD program, an estimate of the GPU's bytes.

    janus-plan --config=configs/sft.py:janus_7b --targets=8xH100,v4-32,v5e-64

Target names follow the cloud conventions: TPU v4 and v5p names count TensorCores (2 per chip,
one JAX device per chip), v5e and v6e names count chips, `v5e:4x8` names a chip topology; `8xH100`
is 8 GPUs. A target may pin its mesh as `NAME:DATAxFSDPxTENSOR` (for example `v5e-64:1x16x4`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from janus_jax import tpu_plan

GIB = tpu_plan.GIB

GPU_KINDS: dict[str, float] = {"H100": 80, "A100": 80, "H200": 141}


@dataclasses.dataclass(frozen=True)
class Target:
    """A device pool: how many JAX devices, each with how much memory, and an optional fixed mesh."""

    name: str
    num_devices: int
    memory_bytes: int
    mesh_shape: tuple[int, int, int] | None = None
    tpu: tpu_plan.TpuSlice | None = None  # compiled by the TPU compiler; None: CPU-compiled estimate


def _parse_mesh(text: str, mesh_text: str) -> tuple[int, int, int]:
    try:
        mesh = tuple(int(x) for x in mesh_text.lower().split("x"))
    except ValueError:
        mesh = ()
    if len(mesh) != 3 or min(mesh) < 1:
        raise ValueError(f"target {text!r}: the mesh after ':' must be three positive sizes DATAxFSDPxTENSOR")
    return mesh


def parse_target(text: str) -> Target:
    """`v4-32`, `v5e-64`, `v5e:4x8` (a TPU topology), `8xH100`, each optionally followed by `:DATAxFSDPxTENSOR`."""
    text = text.strip()
    topology = re.fullmatch(r"(v\d+[a-z]?:\d+(?:x\d+)+)(?::(.*))?", text)
    name, _, mesh_text = (topology.group(1), "", topology.group(2) or "") if topology else text.partition(":")
    mesh = _parse_mesh(text, mesh_text) if mesh_text else None
    gpu = re.fullmatch(r"(\d+)x([A-Za-z]\d+)", name)
    if gpu and gpu.group(2).upper() in GPU_KINDS:
        count, memory, tpu = int(gpu.group(1)), int(GPU_KINDS[gpu.group(2).upper()] * GIB), None
    elif re.match(r"v\d", name):
        tpu = tpu_plan.parse_slice(name)
        count, memory = tpu.num_chips, int(tpu.chip.hbm_gib * GIB)
    else:
        known = ", ".join(f"Nx{k}" for k in GPU_KINDS)
        raise ValueError(f"unknown target {name!r}; expected {known}, or a TPU slice: {tpu_plan.known_slices()}")
    if count < 1:
        raise ValueError(f"target {name!r} has no devices")
    if mesh is not None and math.prod(mesh) != count:
        raise ValueError(f"target {text!r}: mesh {mesh} has {math.prod(mesh)} devices, {name} has {count}")
    return Target(name, count, memory, mesh, tpu)


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


def model_flops_per_step(cfg: ConfigDict) -> float:
    """Analytic FLOPs of one optimizer step over the whole batch: 6·N per token plus attention
    (janus_jax.train.metrics), both sides of a pair, and the forward pass of a frozen reference."""
    from janus_jax.objectives import get_objective
    from janus_jax.train.metrics import train_flops_per_token
    from janus_jax.train.run import model_config, reference_mode

    objective = get_objective(cfg.objective)
    seq = int(cfg.data.seq_len)
    tokens = int(cfg.train.global_batch_size) * seq * (2 if objective.pairs else 1)
    scored = 0.0 if objective.name == "rm" else 1.0  # the reward model runs no LM head
    per_token = train_flops_per_token(model_config(cfg), seq, scored)
    if reference_mode(cfg, objective) == "model":
        per_token *= 4 / 3  # + a forward pass (2 of the 6) through the reference
    return per_token * tokens


def plan_here(
    cfg: ConfigDict, mesh_shape: tuple[int, int, int], tpu: tpu_plan.TpuSlice | None = None
) -> dict[str, Any]:
    """Compile the step for `mesh_shape`: on this process's CPU devices, or for the TPU slice `tpu` with
    the TPU compiler. Per-device bytes from the compiler's buffer assignment."""
    from janus_jax.model.attention import resolve_impl
    from janus_jax.sharding import make_mesh
    from janus_jax.train.run import build_run

    cfg = ConfigDict(cfg.to_dict())
    if tpu is None:
        # Fused GPU kernels (cuDNN) do not compile for CPU devices: plan the XLA attention path, and report
        # its [rows, heads, T, T] score buffer so that GPU users can see what flash attention saves.
        cfg.model.attention_impl = "xla"
        mesh = make_mesh(mesh_shape)
    else:
        cfg.model.attention_impl = resolve_impl(cfg.model.attention_impl, "tpu")
        devices = tpu_plan.compile_only_devices(tpu)
        mesh = make_mesh(mesh_shape, devices)
    run = build_run(cfg, mesh=mesh, with_data=False)  # the trainer's own construction, abstract values only
    with tempfile.TemporaryDirectory(prefix="janus-plan-") as dump:
        start = time.perf_counter()
        compiled = run.lower().compile(compiler_options={"xla_dump_to": dump})
        compile_s = time.perf_counter() - start
        buffers = tpu_plan.largest_buffers(dump)
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
    code = int(stats.generated_code_size_in_bytes) if tpu is not None else 0  # a TPU program lives in HBM
    result = {
        "mesh": dict(zip(("data", "fsdp", "tensor"), mesh_shape)),
        "compiled_for": mesh.devices.flat[0].device_kind if tpu is not None else "CPU (estimate)",
        "attention_impl": cfg.model.attention_impl,
        "num_params": run.num_params,
        "state_bytes": state_bytes,
        "reference_bytes": ref_bytes,
        "batch_bytes": batch_bytes,
        "temp_bytes": int(stats.temp_size_in_bytes),
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
        "code_bytes": code,
        "total_bytes": int(peak) + code,
        "largest_buffers": buffers,
        "attention_scores_bytes": attention_scores_bytes(run),
        "compile_seconds": round(compile_s, 1),
    }
    if tpu is not None:
        cost = tpu_plan.compiler_cost(compiled)
        result["compiler_flops"] = cost["flops"]
        once = stats.argument_size_in_bytes + stats.output_size_in_bytes
        result["roofline"] = tpu_plan.roofline(model_flops_per_step(cfg) / mesh.size, cost, once, tpu.chip)
    return result


# ---- one subprocess per target -------------------------------------------------------------------


def _worker() -> None:
    """Subprocess entry: read {config, mesh, tpu} from stdin, print the plan as JSON on the last line."""
    request = json.loads(sys.stdin.read())
    tpu = tpu_plan.parse_slice(request["tpu"]) if request.get("tpu") else None
    result = plan_here(ConfigDict(request["config"]), tuple(request["mesh"]), tpu)
    print(json.dumps(result))


def _subprocess_env(num_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={num_devices}"])
    env["JAX_PLATFORMS"] = "cpu"  # fake devices, even on a machine with accelerators; TPU targets add theirs
    return env


def plan_target(cfg: ConfigDict, target: Target) -> dict[str, Any]:
    """Plan one target in a subprocess: TPU slices with the TPU compiler, GPUs on as many fake CPU devices."""
    mesh = target.mesh_shape or choose_mesh(cfg, target.num_devices)
    row: dict[str, Any] = {"target": target.name, "devices": target.num_devices, "capacity_bytes": target.memory_bytes}
    if target.tpu is not None:
        row["topology"] = target.tpu.topology
    tpu = target.tpu.spec if target.tpu else None
    request = json.dumps({"config": json.loads(cfg.to_json()), "mesh": list(mesh), "tpu": tpu})
    proc = subprocess.run(
        [sys.executable, "-c", "from janus_jax.plan import _worker; _worker()"],
        input=request,
        capture_output=True,
        text=True,
        env=_subprocess_env(1 if target.tpu else target.num_devices),
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
    """One line per target; sizes in GiB per device; step time and MFU from the TPU roofline."""

    def gib(x: float) -> str:
        return f"{x / GIB:.1f}"

    header = ("target", "devices", "mesh d/f/t", "compiled for", "state", "temp", "total", "capacity", "headroom")
    header += ("step s", "MFU", "verdict")
    lines = [header]
    for r in rows:
        mesh = "/".join(str(r["mesh"][k]) for k in ("data", "fsdp", "tensor"))
        if r["status"] == "ERROR":
            lines.append((r["target"], str(r["devices"]), mesh, "-", "-", "-", "-", gib(r["capacity_bytes"]), "-"))
            lines[-1] += ("-", "-", "ERROR")
            continue
        state = r["state_bytes"] + r["reference_bytes"]
        headroom = f"{gib(r['headroom_bytes'])} ({100 * r['headroom_bytes'] / r['capacity_bytes']:+.0f}%)"
        roof = r.get("roofline")
        speed = (f"{roof['step_seconds']:.2f}", f"{roof['mfu']:.2f}") if roof else ("-", "-")
        lines.append(
            (
                r["target"],
                str(r["devices"]),
                mesh,
                r.get("compiled_for", "CPU (estimate)"),
                gib(state),
                gib(r["temp_bytes"]),
                gib(r["total_bytes"]),
                gib(r["capacity_bytes"]),
                headroom,
                *speed,
                r["status"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    text += [f"{r['target']}: {r['error']}" for r in rows if r["status"] == "ERROR"]
    return "\n".join(text)


def _buffer_list(buffers: list[dict[str, Any]]) -> str:
    return "; ".join(f"{b['bytes'] / GIB:.2f} GiB {b['shape']} ({b['op'] or b['name']})" for b in buffers)


def plan_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the numbers do and do not include, and where the memory goes when a plan does not fit."""
    notes = []
    if any(r["status"] != "ERROR" and r.get("compiled_for") == "CPU (estimate)" for r in rows):
        notes.append(
            "GPU rows are estimates: XLA's buffer assignment for the same SPMD program compiled for CPU devices; "
            "GPU compilers fuse and schedule differently, so keep some headroom"
        )
    for r in rows:
        if r["status"] == "ERROR":
            continue
        scores = r["attention_scores_bytes"] / GIB
        if r.get("roofline"):
            roof = r["roofline"]
            notes.append(
                f"{r['target']} ({r['topology']}, {r['compiled_for']}): TPU-compiled, {r['code_bytes'] / GIB:.2f} GiB "
                f"of it program code; model FLOPs {roof['model_flops'] / 1e12:.1f} TFLOP/device/step (the "
                f"compiler's cost analysis counts loop bodies once: {r['compiler_flops'] / 1e12:.2f}); roofline "
                f"{roof['step_seconds']:.2f} s/step, {roof['bound']}-bound (compute alone: "
                f"{roof['compute_seconds']:.2f} s; HBM traffic {roof['hbm_traffic_bytes'] / 1e12:.1f} TB: the state "
                "once, the loop bodies' bytes scaled as their FLOPs); collectives not modelled"
            )
            if r["attention_impl"] == "splash":
                notes.append(
                    f"{r['target']}: splash attention; the XLA path would hold float32 score blocks of up to "
                    f"{scores:.2f} GiB per device (model.attention_impl=xla to compare)"
                )
        elif re.match(r"\d+x", r["target"]):
            notes.append(
                f"{r['target']}: attention was planned on the XLA path; with cuDNN flash attention (the default on "
                f"GPUs) float32 score blocks of up to {scores:.1f} GiB per device counted in temp are not materialized"
            )
        if r["status"] == "DOES NOT FIT" and r.get("largest_buffers"):
            notes.append(f"{r['target']} does not fit; largest buffers: {_buffer_list(r['largest_buffers'])}")
    return notes
