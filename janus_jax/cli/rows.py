"""A resumable JSONL job: the row runner janus-generate and janus-best-of-n share."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass
class InputRow:
    line: int  # 1-based line number in the input file
    data: dict
    system: str
    prompt: str


def read_rows(path: Path, errors: list[str]) -> Iterator[InputRow]:
    """Valid rows of a JSONL file; each malformed line is described in `errors` (never silently skipped)."""
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{path}:{line_no}: not valid JSON ({e})")
                continue
            if not isinstance(data, dict):
                errors.append(f"{path}:{line_no}: expected a JSON object, got {type(data).__name__}")
                continue
            prompt, system = data.get("prompt"), data.get("system", "")
            if not isinstance(prompt, str) or not prompt.strip():
                errors.append(f"{path}:{line_no}: field 'prompt' is missing or not a non-empty string")
                continue
            if system is None:
                system = ""
            if not isinstance(system, str):
                errors.append(f"{path}:{line_no}: field 'system' must be a string")
                continue
            yield InputRow(line_no, data, system, prompt)


def done_lines(path: Path) -> set[int]:
    """Input lines already answered in `path`; a torn last line (from a kill) is cut off."""
    if not path.exists():
        return set()
    done: set[int] = set()
    good_bytes = 0
    with path.open("rb") as f:
        for raw in f:
            try:
                row = json.loads(raw)
                done.add(int(row["input_line"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                break
            if not raw.endswith(b"\n"):
                break
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        log.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return done


def run_rows(
    input_path: Path,
    output_path: Path,
    prepare: Callable[[InputRow], Any],
    process: Callable[[list[tuple[InputRow, Any]]], list[dict]],
    *,
    rows_per_batch: int,
    verb: str,
) -> int:
    """A resumable JSONL job: every input row not yet in the output is prepared, then processed in
    batches whose records are appended (and fsynced) one batch at a time.

    `prepare(row)` raises ValueError for a row that cannot be done (reported with its line, counted);
    `process(batch)` returns one record per (row, prepared) pair, and the row's `input_line` is added.
    Returns the exit status: 1 if any row was malformed or refused.
    """
    errors: list[str] = []
    output_path.parent.mkdir(parents=True, exist_ok=True)
    done = done_lines(output_path)
    todo = []
    for row in read_rows(input_path, errors):
        if row.line in done:
            continue
        try:
            todo.append((row, prepare(row)))
        except ValueError as e:
            errors.append(f"{input_path}:{row.line}: {e}")
    log.info("%d rows to do, %d already in %s, %d malformed", len(todo), len(done), output_path, len(errors))
    written = 0
    with output_path.open("a", encoding="utf-8") as out:
        for start in range(0, len(todo), rows_per_batch):
            batch = todo[start : start + rows_per_batch]
            for (row, _), record in zip(batch, process(batch), strict=True):
                out.write(json.dumps({**record, "input_line": row.line}, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            written += len(batch)
            log.info("%d / %d rows written", written, len(todo))
    for message in errors:
        print(message, file=sys.stderr)
    if errors:
        print(f"{len(errors)} input row(s) not {verb} (listed above)", file=sys.stderr)
    return 1 if errors else 0
