"""JSON files that survive a killed process, and the one reader of row files (JSON, JSON lines, Parquet).

Shared by ``eval``, ``data_gen`` and the manifest: one parser for JSON lines (errors name file and line),
atomic rewrites, line-at-a-time appends, and file hashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from janus_jax.paths import LineAppender, is_url, to_path, write_atomic

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20


def read_jsonl(
    path: str | os.PathLike[str], *, skip_bad_lines: bool = False, missing_ok: bool = False
) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file. A bad line is an error naming file and line, unless ``skip_bad_lines``
    (for append logs, where a killed run can leave one torn line). A missing file is an error unless
    ``missing_ok`` (then it has no rows)."""
    path = to_path(path)
    if missing_ok and not path.exists():
        return []
    rows = []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as error:
                if not skip_bad_lines:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({error})") from None
                log.warning("%s:%d: skipping a torn line (a previous run was killed mid-write)", path, lineno)
    return rows


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``.json`` (a list, or one object), ``.jsonl`` or ``.parquet`` file, as plain Python values.

    Parquet list and struct columns come back as lists and dicts (pyarrow's ``to_pylist``), exactly as the
    same rows read from JSON: never numpy arrays, whose truth value is ambiguous.
    """
    path = to_path(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows")
        return data
    if path.suffix == ".parquet":
        return read_parquet(path)
    raise ValueError(f"{path}: unsupported file type (use .json, .jsonl or .parquet)")


def read_parquet(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a Parquet file, local or `gs://` (read through the path layer, as one download)."""
    import pyarrow.parquet as pq

    with to_path(path).open("rb") as f:
        return pq.read_table(f).to_pylist()


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write all rows to a temporary file, fsync, then rename over ``path``: readers never see half a file.

    A `gs://` object is uploaded in one piece (`janus_jax.paths.write_atomic`), which is atomic already.
    """
    if is_url(path):
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
        write_atomic(path, "".join(lines))
        return len(lines)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return count


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Indented JSON written whole (`janus_jax.paths.write_atomic`); values JSON cannot hold are written as strings."""
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


class Appender:
    """Appends one JSON row per write() call, so a kill loses at most the row being written (local or gs://;
    see `janus_jax.paths.LineAppender` for ``flush_interval_s``)."""

    def __init__(self, path: str | os.PathLike[str], *, flush_interval_s: float = 0.0):
        self._lines = LineAppender(path, flush_interval_s=flush_interval_s)
        self.path = self._lines.path

    def write(self, row: dict[str, Any]) -> None:
        self._lines.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._lines.close()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with to_path(path).open("rb") as f:
        while block := f.read(_HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()
