"""Config sweeps: a base config and a grid (or list) of overrides, one workdir per point.

A sweep file is Python with ``get_sweep()`` returning::

    {"base": "configs/sft.py:tiny",                     # --config of every point
     "grid": {"optimizer.lr": [1e-4, 3e-4], ...},       # cartesian product, or
     "points": [{"optimizer.lr": 1e-4}, ...],           # an explicit list
     "fixed": {"train.max_steps": 20}}                  # optional: overrides shared by every point

Every point is checked (keys exist, values parse, its workdir holds no other run) before the first
one starts. Points then run one after another (or are submitted); a failed point is recorded and the
rest go on. ``SWEEP_DIR/sweep.json`` records each point's overrides and outcome, and a rerun skips
points whose manifest says they completed, so a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etils import epath

from janus_jax import manifest as run_manifest
from janus_jax.paths import to_path, write_atomic
from launch.job import Job, JobError, preflight, resolve_config, with_overrides

SWEEP_RECORD = "sweep.json"
DEFAULT_PROGRAM = ("janus-train",)
_ALLOWED_KEYS = {"base", "grid", "points", "fixed"}
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=+-]")


class SweepError(ValueError):
    """A sweep file or sweep that cannot run as given."""


@dataclass(frozen=True)
class Point:
    index: int
    overrides: dict[str, Any]
    name: str


@dataclass(frozen=True)
class Sweep:
    name: str
    path: str
    base: str
    points: tuple[Point, ...]
    swept_keys: tuple[str, ...] = field(default=())
    fixed: dict[str, Any] = field(default_factory=dict)


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def point_names(overrides: Sequence[Mapping[str, Any]]) -> list[str]:
    """Readable unique names: index plus ``key=value`` for each override (short keys when unambiguous)."""
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    short = {k: (leaf if leaves.count(leaf) == 1 else k) for k, leaf in zip(keys, leaves, strict=True)}
    names = []
    for index, point in enumerate(overrides):
        parts = [f"{short[k]}={_value_text(v)}" for k, v in point.items()]
        names.append(_UNSAFE_NAME_CHARS.sub("_", "-".join([f"{index:02d}", *parts]))[:120])
    return names


def expand(spec: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    """The override dicts of a sweep spec (grid product or explicit points), validated."""
    unknown = set(spec) - _ALLOWED_KEYS
    if unknown:
        raise SweepError(f"{source}: unknown sweep field(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")
    if not isinstance(spec.get("base"), str) or not spec["base"]:
        raise SweepError(f"{source}: 'base' must name a config, e.g. 'configs/sft.py:tiny'")
    fixed = spec.get("fixed", {})
    if not isinstance(fixed, Mapping):
        raise SweepError(f"{source}: 'fixed' must be a dict of overrides shared by every point")
    has_grid, has_points = "grid" in spec, "points" in spec
    if has_grid == has_points:
        raise SweepError(f"{source}: a sweep needs exactly one of 'grid' (dict of value lists) or 'points' (list)")
    if has_grid:
        grid = spec["grid"]
        if not isinstance(grid, Mapping) or not grid:
            raise SweepError(f"{source}: 'grid' must be a non-empty dict of key -> list of values")
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise SweepError(f"{source}: grid key {key!r} must map to a non-empty list of values")
        keys = list(grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]
    points = spec["points"]
    if not isinstance(points, (list, tuple)) or not points:
        raise SweepError(f"{source}: 'points' must be a non-empty list of override dicts")
    for index, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise SweepError(f"{source}: point {index} must be a dict of overrides, got {type(point).__name__}")
    return [dict(p) for p in points]


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Import a sweep file and expand it into named points."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise SweepError(f"{path}: cannot import: {err}") from err
    if not callable(getattr(module, "get_sweep", None)):
        raise SweepError(f"{path}: defines no get_sweep() function")
    spec = module.get_sweep()
    if not isinstance(spec, Mapping):
        raise SweepError(f"{path}: get_sweep() must return a dict, got {type(spec).__name__}")
    overrides = expand(spec, str(path))
    names = point_names(overrides)
    points = tuple(Point(i, o, n) for i, (o, n) in enumerate(zip(overrides, names, strict=True)))
    swept = tuple(dict.fromkeys(k for o in overrides for k in o))
    return Sweep(
        name=path.stem,
        path=str(path),
        base=spec["base"],
        points=points,
        swept_keys=swept,
        fixed=dict(spec.get("fixed", {})),
    )


def point_argv(sweep: Sweep, point: Point, program: Sequence[str], workdir: epath.Path) -> list[str]:
    """The point's job command; its own overrides come after (and so win over) the shared ones."""
    overrides = {**sweep.fixed, **point.overrides}
    return with_overrides([*program, f"--config={sweep.base}", f"--workdir={workdir}"], overrides)


def check_points(
    sweep: Sweep, sweep_dir: epath.Path, program: Sequence[str], *, check_workdirs: bool = True
) -> dict[str, list[str]]:
    """Preflight every point; raise SweepError listing every bad point, else return argv by name."""
    try:
        resolve_config([f"--config={sweep.base}"])
    except JobError as err:
        raise SweepError(f"sweep {sweep.path} refused, nothing was started: base config: {err}") from err
    argvs, errors = {}, []
    for point in sweep.points:
        argv = point_argv(sweep, point, program, sweep_dir / point.name)
        try:
            preflight(Job(tuple(argv)), check_local_workdir=check_workdirs)
        except JobError as err:
            errors.append(f"point {point.name}: {err}")
        argvs[point.name] = argv
    if errors:
        raise SweepError(f"sweep {sweep.path} refused, nothing was started:\n" + "\n".join(errors))
    return argvs


def _write_record(sweep_dir: epath.Path, record: dict) -> None:
    write_atomic(sweep_dir / SWEEP_RECORD, json.dumps(record, indent=2) + "\n")


def run_sweep(
    sweep: Sweep,
    *,
    sweep_dir: str | os.PathLike,
    launch_point: Callable[[list[str], epath.Path, str], int],
    target: str,
    program: Sequence[str] = DEFAULT_PROGRAM,
    submits: bool = False,
    dry_run: bool = False,
) -> int:
    """Run (or submit) every point; return 0 when all succeeded, 1 when any failed, 130 if interrupted.

    ``launch_point(argv, workdir, name)`` runs one point and returns its exit code; ``submits`` marks
    targets (SLURM) where exit code 0 means "queued", not "finished". ``sweep_dir`` (and so every point's
    workdir under it) may be a gs:// URL.
    """
    sweep_dir = to_path(sweep_dir)
    argvs = check_points(sweep, sweep_dir, program, check_workdirs=not dry_run)
    record = {
        "sweep": sweep.name,
        "sweep_file": sweep.path,
        "base": sweep.base,
        "target": target,
        "swept_keys": list(sweep.swept_keys),
        "fixed": sweep.fixed,
        "points": [
            {
                "name": p.name,
                "index": p.index,
                "overrides": p.overrides,
                "workdir": str(sweep_dir / p.name),
                "status": "pending",
                "returncode": None,
                "start_time": None,
                "end_time": None,
            }
            for p in sweep.points
        ],
    }
    if not dry_run:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _write_record(sweep_dir, record)
    interrupted = False
    for point, entry in zip(sweep.points, record["points"], strict=True):
        workdir = sweep_dir / point.name
        if interrupted:
            entry["status"] = "not run (interrupted)"
            continue
        previous = None if dry_run else run_manifest.read_manifest(workdir)
        if previous and previous.get("status") == "completed":
            entry["status"] = "completed (earlier run)"
            print(f"[sweep] {point.name}: already completed, skipped", file=sys.stderr, flush=True)
            continue
        print(f"[sweep] point {point.index + 1}/{len(sweep.points)}: {point.name}", file=sys.stderr, flush=True)
        entry["start_time"] = run_manifest.utc_now()
        try:
            code = launch_point(argvs[point.name], workdir, point.name)
        except KeyboardInterrupt:  # between points (inside one, the launcher forwards it and returns)
            code = 130
        entry["end_time"] = run_manifest.utc_now()
        entry["returncode"] = code
        if dry_run:
            entry["status"] = "dry run"
        elif code == 0:
            entry["status"] = "submitted" if submits else "completed"
        elif code in (130, 143):
            entry["status"] = "interrupted"
            interrupted = True
        else:
            entry["status"] = "failed"
            print(f"[sweep] {point.name}: FAILED with exit code {code}; continuing", file=sys.stderr, flush=True)
        if not dry_run:
            _write_record(sweep_dir, record)
    if not dry_run:
        _write_record(sweep_dir, record)
    failed = [e["name"] for e in record["points"] if e["status"] == "failed"]
    summary = ", ".join(f"{e['name']}: {e['status']}" for e in record["points"])
    print(f"[sweep] {sweep.name} in {sweep_dir}: {summary}", file=sys.stderr, flush=True)
    if interrupted:
        return 130
    if failed:
        print(f"[sweep] {len(failed)} of {len(sweep.points)} point(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
