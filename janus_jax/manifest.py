"""Run manifests: what produced the numbers in a workdir.

Every training run writes ``manifest.json`` beside its metrics and checkpoints: the resolved config,
code version, library versions, devices and mesh, hashes of the data it read, and its start/end
times and status. Sweep and eval tables read it to label their rows, and ``check_workdir`` uses it
to refuse a workdir that holds a different run (the same config means "resume").

JAX is imported inside functions only, so the launcher and report tools stay light.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from etils import epath

from janus_jax.jsonio import sha256_file
from janus_jax.paths import absolute, to_path, write_atomic

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_RUN_MARKERS = ("metrics.jsonl", "checkpoints")
_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy", "janus-jax")


class WorkdirConflictError(ValueError):
    """The workdir already holds a run that this config would overwrite."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for a config value; anything exotic becomes its repr, never dropped."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / jax scalars
        try:
            return to_jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return repr(value)


def config_to_dict(config: Any) -> dict:
    """The resolved config as the JSON-normalised dict stored in (and compared against) manifests."""
    if config is None:
        return {}
    resolved = to_jsonable(config)
    if not isinstance(resolved, dict):
        raise TypeError(f"config must be a mapping or ConfigDict, got {type(config).__name__}")
    return resolved


def manifest_path(workdir: str | os.PathLike) -> epath.Path:
    return to_path(workdir) / MANIFEST_NAME


def read_manifest(workdir: str | os.PathLike) -> dict | None:
    """The manifest of ``workdir``, or None when it has none; a corrupt file is an error naming it."""
    path = manifest_path(workdir)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def code_version(manifest: Mapping | None) -> str:
    """Short commit of a manifest's code, with ``+dirty`` for uncommitted changes ("" when unknown).

    Tables (sweep results, eval reports) use it to label which code produced a row.
    """
    code = (manifest or {}).get("code") or {}
    commit = code.get("commit")
    if not commit:
        return ""
    return commit[:10] + ("+dirty" if code.get("dirty") else "")


def config_differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (added, removed or changed)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if key not in old:
            diffs.append(f"{path}: <absent> -> {new[key]!r}")
        elif key not in new:
            diffs.append(f"{path}: {old[key]!r} -> <absent>")
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            diffs.extend(config_differences(old[key], new[key], prefix=f"{path}."))
        elif old[key] != new[key]:
            diffs.append(f"{path}: {old[key]!r} -> {new[key]!r}")
    return diffs


def check_workdir(workdir: str | os.PathLike, config: Any) -> bool:
    """Refuse a workdir that holds a different run; return True when this config resumes one there.

    A workdir with no run in it is fine (returns False). One whose manifest has the same resolved
    config is a resume (returns True). A different config, or run outputs without any manifest,
    raise ``WorkdirConflictError`` before anything is written.
    """
    workdir = to_path(workdir)
    manifest = read_manifest(workdir)
    if manifest is None:
        leftovers = [name for name in _RUN_MARKERS if (workdir / name).exists()]
        if leftovers:
            raise WorkdirConflictError(
                f"workdir {workdir} holds run outputs ({', '.join(leftovers)}) but no {MANIFEST_NAME}; "
                "refusing to mix runs: choose another --workdir or remove it"
            )
        return False
    if "config" not in manifest:
        raise WorkdirConflictError(f"{manifest_path(workdir)} has no 'config' field; cannot tell whose run it is")
    diffs = config_differences(manifest["config"], config_to_dict(config))
    if diffs:
        shown = "\n  ".join(diffs[:20]) + (f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else "")
        raise WorkdirConflictError(
            f"workdir {workdir} already holds a different run (config differs in {len(diffs)} key(s)):\n"
            f"  {shown}\nchoose another --workdir, or rerun with the same config to resume"
        )
    return True


def git_info(path: str | os.PathLike | None = None) -> dict:
    """Commit and dirty flag of the repository holding ``path`` (default: this package's source).

    Outside a git checkout (an installed wheel, a copied tree) both are None rather than an error.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict:
    """Platform, device kind and counts as JAX sees them (imports JAX)."""
    import jax

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


def mesh_info(mesh: Any) -> dict | None:
    """Axis names and sizes of a ``jax.sharding.Mesh`` (or of anything with ``.shape`` as a mapping)."""
    if mesh is None:
        return None
    shape = dict(mesh.shape)
    return {"axis_names": list(shape), "shape": {str(k): int(v) for k, v in shape.items()}}


def data_file_record(path: str | os.PathLike, previous: Mapping | None = None) -> dict:
    """Hash of one data input: a file, a directory (every file under it, by relative path) or a name.

    Inputs that are not local paths (a hub dataset id, a ``gs://`` URL) are recorded as such with no
    hash, so nothing the run read is missing from the manifest. ``previous`` is the record of the same
    path from an earlier attempt of the run: when sizes, file count and newest modification time are
    unchanged (rsync's test), its hash is kept instead of reading the data again, so a resume does not
    re-read gigabytes of shards.
    """
    path_str = os.fspath(path)
    local = Path(path_str)
    if local.is_file():
        stat = local.stat()
        record = {"path": path_str, "kind": "file", "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return {**record, "sha256": _unchanged_hash(previous, record) or sha256_file(local)}
    if local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.is_file())
        stats = [file.stat() for file in files]
        record = {
            "path": path_str,
            "kind": "directory",
            "files": len(files),
            "bytes": sum(stat.st_size for stat in stats),
            "mtime_ns": max((stat.st_mtime_ns for stat in stats), default=0),
        }
        digest = _unchanged_hash(previous, record)
        if digest is None:
            hasher = hashlib.sha256()
            for file in files:
                hasher.update(file.relative_to(local).as_posix().encode() + b"\0")
                hasher.update(sha256_file(file).encode() + b"\n")
            digest = hasher.hexdigest()
        return {**record, "sha256": digest}
    return {"path": path_str, "kind": "not_local", "sha256": None}


def _unchanged_hash(previous: Mapping | None, record: Mapping) -> str | None:
    if previous and previous.get("sha256") and all(previous.get(k) == v for k, v in record.items()):
        return previous["sha256"]
    return None


def _is_primary_process() -> bool:
    """Process 0 writes the manifest; without JAX loaded there is only one process."""
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


def write_manifest(
    workdir: str | os.PathLike,
    *,
    config: Any,
    mesh: Any = None,
    data_files: Iterable[str | os.PathLike] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Record the start of a run (or of its resumption) in ``workdir/manifest.json``; return it.

    Raises ``WorkdirConflictError`` when the workdir holds a different run. On resume the first
    start time is kept and this attempt is appended to ``attempts``. Only process 0 writes.
    """
    workdir = to_path(workdir)
    check_workdir(workdir, config)
    previous = read_manifest(workdir) or {}
    earlier = {r.get("path"): r for r in previous.get("data_files", []) if isinstance(r, dict)}
    now = utc_now()
    attempt = {"start_time": now, "end_time": None, "status": "running", "host": socket.gethostname()}
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": absolute(workdir, resolve=True).name,
        "workdir": str(absolute(workdir, resolve=True)),
        "status": "running",
        "start_time": previous.get("start_time", now),
        "end_time": None,
        "command": list(sys.argv),
        "config": config_to_dict(config),
        "code": git_info(),
        "versions": library_versions(),
        "devices": device_info(),
        "mesh": mesh_info(mesh),
        "data_files": [data_file_record(p, earlier.get(os.fspath(p))) for p in data_files],
        "extra": to_jsonable(dict(extra or {})),
        "attempts": [*previous.get("attempts", []), attempt],
    }
    if _is_primary_process():
        write_atomic(manifest_path(workdir), json.dumps(manifest, indent=2) + "\n")
    return manifest


def finish_manifest(workdir: str | os.PathLike, status: str, **fields: Any) -> dict:
    """Record the end of a run: status (e.g. "completed", "failed", "interrupted") and end time.

    Extra keyword fields (for example ``final_step=1000``) are stored at the top level.
    """
    manifest = read_manifest(workdir)
    if manifest is None:
        raise FileNotFoundError(f"{manifest_path(workdir)} does not exist: call write_manifest at the start of the run")
    now = utc_now()
    manifest["status"] = status
    manifest["end_time"] = now
    if manifest.get("attempts"):
        manifest["attempts"][-1].update(end_time=now, status=status)
    manifest.update(to_jsonable(fields))
    if _is_primary_process():
        write_atomic(manifest_path(workdir), json.dumps(manifest, indent=2) + "\n")
    return manifest
