"""TPU slices planned with the TPU compiler, on a machine without a TPU.

libtpu (`pip install "jax[tpu]==0.10.2"`) compiles for any TPU topology from a CPU-only machine:
`jax.experimental.topologies.get_topology_desc("v5e:8x8", "tpu")` yields compile-only TPU devices, and
a step jitted over a mesh of them compiles to a real TPU executable with the TPU's own buffer
assignment and cost analysis (MaxText's `train_compile.py` plans pod runs the same way).

Slice names follow the cloud: v4 and v5p names count TensorCores (2 per chip, one JAX device per chip),
v5e and v6e names count chips. `GEN:AxB[xC]` names a chip topology directly (`v5e:4x8`, `v4:2x2x4`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class TpuChip:
    """One TPU generation: what the compiler calls it and the chip's peak numbers (public specs)."""

    generation: str  # the cloud's name: v4, v5p, v5e, v6e
    libtpu_name: str  # the prefix of a libtpu topology name
    device_kind: str  # as JAX reports it
    hbm_gib: float
    peak_bf16_flops: float  # dense, per chip
    hbm_bytes_per_s: float
    cores_per_chip: int  # what one unit of a slice name's number counts: TensorCores (2) or chips (1)
    torus_dims: int  # 3 for the v4/v5p torus, 2 for v5e/v6e
    chip_config: str  # "megacore": the chip's two TensorCores are one JAX device
    max_chips: int


CHIPS: dict[str, TpuChip] = {
    "v4": TpuChip("v4", "v4", "TPU v4", 32, 275e12, 1.2e12, 2, 3, "megacore", 2048),
    "v5p": TpuChip("v5p", "v5", "TPU v5", 95, 459e12, 2.765e12, 2, 3, "megacore", 4096),
    "v5e": TpuChip("v5e", "v5e", "TPU v5 lite", 16, 197e12, 0.819e12, 1, 2, "default", 256),
    "v6e": TpuChip("v6e", "v6e", "TPU v6 lite", 32, 918e12, 1.64e12, 1, 2, "default", 256),
}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """A TPU slice: its chip generation and the libtpu topology the compiler plans for."""

    chip: TpuChip
    topology: str  # e.g. "v5e:8x8"

    @property
    def num_chips(self) -> int:
        return math.prod(int(x) for x in self.topology.split(":")[1].split("x"))

    @property
    def spec(self) -> str:
        """The topology in the cloud's generation names (`v5p:4x4x4`), which `parse_slice` reads back."""
        return f"{self.chip.generation}:{self.topology.split(':')[1]}"


def _doubling_shape(chips: int, dims: int) -> tuple[int, ...]:
    """The cloud's shape for a power-of-two chip count: double the last of the smallest sides
    (v5e-32 -> 4x8, v4-32 (16 chips) -> 2x2x4, v5p-128 (64 chips) -> 4x4x4)."""
    shape = [1] * dims if dims == 2 else [2, 2, 1]
    while math.prod(shape) < chips:
        smallest = min(shape)
        last = max(i for i, s in enumerate(shape) if s == smallest)
        shape[last] *= 2
    return tuple(shape)


def known_slices() -> str:
    """The names `parse_slice` accepts, for error messages."""
    parts = []
    for gen, chip in CHIPS.items():
        low = 4 * chip.cores_per_chip
        parts.append(f"{gen}-{low} ... {gen}-{chip.max_chips * chip.cores_per_chip} (powers of two)")
    gens = ", ".join(CHIPS)
    return f"{'; '.join(parts)}; or a topology GEN:AxB (v5e, v6e) / GEN:AxBxC (v4, v5p) with GEN one of {gens}"


def parse_slice(name: str) -> TpuSlice:
    """`v5e-64` -> v5e:8x8, `v4-32` -> v4:2x2x4, or a topology `v5e:4x8` / `v5p:4x4x8` as given."""
    sized = re.fullmatch(r"(v\d+[a-z]?)-(\d+)", name)
    topo = re.fullmatch(r"(v\d+[a-z]?):(\d+(?:x\d+)+)", name)
    chip = CHIPS.get((sized or topo).group(1)) if (sized or topo) else None
    if chip is None:
        raise ValueError(f"unknown TPU slice {name!r}; known: {known_slices()}")
    if topo:
        dims = tuple(int(x) for x in topo.group(2).split("x"))
        if len(dims) != chip.torus_dims or min(dims) < 1:
            raise ValueError(
                f"TPU topology {name!r}: {chip.generation} chips form a {chip.torus_dims}-D grid "
                f"({'AxBxC' if chip.torus_dims == 3 else 'AxB'}); known: {known_slices()}"
            )
        return TpuSlice(chip, f"{chip.libtpu_name}:{topo.group(2)}")
    count = int(sized.group(2))
    chips, rest = divmod(count, chip.cores_per_chip)
    low = 4  # one host's 2x2 chips: the compiler's default host bounds
    if rest or chips < low or chips > chip.max_chips or chips & (chips - 1):
        raise ValueError(
            f"unknown TPU slice {name!r}: name a topology for other sizes (e.g. "
            f"{chip.generation}:{'4x4x12' if chip.torus_dims == 3 else '8x12'}); known: {known_slices()}"
        )
    shape = _doubling_shape(chips, chip.torus_dims)
    return TpuSlice(chip, f"{chip.libtpu_name}:{'x'.join(map(str, shape))}")


# libtpu takes /tmp/libtpu_lockfile to own a TPU; a compile-only process owns none, so it must not fail
# because another JAX process on this machine loaded libtpu. No metadata server to ask either.
_COMPILE_ONLY_ENV = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost"}


@contextlib.contextmanager
def _compile_only_environment() -> Iterator[None]:
    """libtpu's settings while it loads, restored afterwards: a TPU_WORKER_HOSTNAMES left behind would make
    every program this process starts later (a janus-train run) believe it is a TPU pod worker."""
    saved = {k: os.environ.get(k) for k in _COMPILE_ONLY_ENV}
    for k, v in _COMPILE_ONLY_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compile_only_devices(tpu: TpuSlice) -> list:
    """TPU devices of `tpu.topology` to compile for; nothing runs on them."""
    try:
        import libtpu  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            'planning for a TPU needs the TPU compiler: pip install "jax[tpu]==0.10.2" (or janus-jax[tpu]); '
            "it installs on CPU-only machines"
        ) from e
    from jax.experimental import topologies

    with _compile_only_environment():
        return list(topologies.get_topology_desc(tpu.topology, "tpu", chip_config_name=tpu.chip.chip_config).devices)


# ---- what the compiler said ----------------------------------------------------------------------

_ALLOCATION = re.compile(r"^allocation \d+: size \d+(, color (\d+))?")
_VALUE = re.compile(r"^ value: <\d+ (\S+?)(?:\{[\d,]*\})? @\d+> \(size=(\d+),offset=\d+\): (\S+)")
_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?(\S+) = .*?op_name="([^"]+)"')


def largest_buffers(dump_dir: str | os.PathLike, count: int = 5) -> list[dict[str, Any]]:
    """The largest device-memory values in XLA's buffer assignment (one per name), with the JAX op
    that made them. Other memory colors (a TPU's on-chip VMEM) are not device memory and are left out."""
    dump = Path(dump_dir)
    assignment = sorted(dump.glob("*after_optimizations-buffer-assignment.txt"))
    if not assignment:
        return []
    sizes: dict[str, tuple[int, str]] = {}
    in_device_memory = False
    for line in max(assignment, key=lambda p: p.stat().st_size).read_text().splitlines():
        allocation = _ALLOCATION.match(line)
        if allocation:
            in_device_memory = allocation.group(2) in (None, "0")
            continue
        match = _VALUE.match(line) if in_device_memory else None
        if match:
            name, size, shape = match.group(1), int(match.group(2)), match.group(3).split("{")[0]
            if size > sizes.get(name, (0, ""))[0]:
                sizes[name] = (size, shape)
    top = sorted(sizes.items(), key=lambda item: -item[1][0])[:count]
    wanted = {name for name, _ in top}
    ops: dict[str, str] = {}
    for hlo in dump.glob("*after_optimizations.txt"):
        for line in hlo.read_text().splitlines():
            match = _OP_NAME.match(line)
            if match and match.group(1) in wanted:
                ops[match.group(1)] = match.group(2).replace("\\'", "'")
    return [{"bytes": size, "shape": shape, "name": name, "op": ops.get(name, "")} for name, (size, shape) in top]


def compiler_cost(compiled) -> dict[str, float]:
    """FLOPs and bytes accessed from the compiler's cost analysis (loop bodies counted once)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    cost = cost or {}
    return {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def roofline(model_flops: float, compiler: dict[str, float], once_bytes: float, chip: TpuChip) -> dict[str, float]:
    """Step time and MFU per device from the chip's peak FLOP/s and HBM bandwidth.

    The compiler's cost analysis counts a loop body once (the scan over layers, the micro-batch scan),
    so its FLOPs are far below the step's; `model_flops` (6·N per token plus attention) replaces them.
    HBM traffic: `once_bytes` (the step's arguments and outputs: state and batch, touched about once,
    by the optimizer update outside the loops) plus the rest of the compiler's bytes scaled as its FLOPs
    are. Splash kernels report the bytes they move but not their FLOPs, so the traffic still leans high;
    collectives and their overlap are not modelled.
    """
    compute_s = model_flops / chip.peak_bf16_flops
    scale = model_flops / compiler["flops"] if compiler["flops"] else 0.0
    traffic = once_bytes + max(compiler["bytes_accessed"] - once_bytes, 0.0) * scale
    memory_s = traffic / chip.hbm_bytes_per_s
    step_s = max(compute_s, memory_s)
    return {
        "model_flops": model_flops,
        "compiler_bytes_accessed": compiler["bytes_accessed"],
        "hbm_traffic_bytes": traffic,
        "compute_seconds": compute_s,
        "memory_seconds": memory_s,
        "step_seconds": step_s,
        "mfu": model_flops / (step_s * chip.peak_bf16_flops) if step_s else 0.0,
        "bound": "compute" if compute_s >= memory_s else "memory",
    }
