"""Append-only JSONL tables of a run directory (responses, judgments), keyed so a rerun skips done rows.

Local or `gs://` alike, through `janus_jax.jsonio` (see `janus_jax.paths.LineAppender` for how appends
reach a bucket).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from janus_jax.jsonio import Appender, read_jsonl, write_json_atomic, write_jsonl_atomic
from janus_jax.paths import BUSY_LOG_FLUSH_S, to_path

write_json = write_json_atomic  # run.json, scores.json: written whole, never half


def row_key(row: dict[str, Any], fields: Iterable[str]) -> tuple:
    return tuple(str(row.get(f)) for f in fields)


class RowStore:
    """Rows of one JSONL file, indexed by ``key_fields``; later rows with the same key replace earlier ones.

    Each row is one appended line; a torn last line from a kill is skipped (with a warning) on load and
    sealed off by the next append. The file is created by the first ``add``.
    """

    def __init__(self, path: str | os.PathLike[str], key_fields: tuple[str, ...]):
        self.path = to_path(path)
        self.key_fields = key_fields
        rows = read_jsonl(self.path, skip_bad_lines=True, missing_ok=True)
        self.rows: dict[tuple, dict[str, Any]] = {row_key(row, key_fields): row for row in rows}
        self._appender: Appender | None = None

    def get(self, key: tuple) -> dict[str, Any] | None:
        return self.rows.get(key)

    def add(self, row: dict[str, Any]) -> None:
        if self._appender is None:
            self._appender = Appender(self.path, flush_interval_s=BUSY_LOG_FLUSH_S)
        self._appender.write(row)
        self.rows[row_key(row, self.key_fields)] = row

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the file's content atomically (used by rescore)."""
        rows = list(rows)
        self.close()
        write_jsonl_atomic(self.path, rows)
        self.rows = {row_key(r, self.key_fields): r for r in rows}

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    def __len__(self) -> int:
        return len(self.rows)

    def values(self) -> list[dict[str, Any]]:
        return list(self.rows.values())
