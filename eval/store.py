"""Append-only JSONL tables of a run directory (responses, judgments), keyed so a rerun skips done rows."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def row_key(row: dict[str, Any], fields: Iterable[str]) -> tuple:
    return tuple(str(row.get(f)) for f in fields)


class RowStore:
    """Rows of one JSONL file, indexed by ``key_fields``; later rows with the same key replace earlier ones.

    Each row is one flushed ``write``; a torn last line from a kill is skipped (and counted) on load.
    """

    def __init__(self, path: str | os.PathLike[str], key_fields: tuple[str, ...]):
        self.path = Path(path)
        self.key_fields = key_fields
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.torn_lines = 0
        if self.path.exists():
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        self.torn_lines += 1
                        continue
                    self.rows[row_key(row, key_fields)] = row
        if self.torn_lines:
            log.warning("%s: skipped %d torn line(s) left by an interrupted run", self.path, self.torn_lines)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        if self.torn_lines:
            self._fh.write("\n")  # seal a torn tail so the next row starts on its own line

    def get(self, key: tuple) -> dict[str, Any] | None:
        return self.rows.get(key)

    def add(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.rows[row_key(row, self.key_fields)] = row

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the file's content atomically (used by rescore)."""
        rows = list(rows)
        self._fh.close()
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)
        self.rows = {row_key(r, self.key_fields): r for r in rows}
        self._fh = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._fh.close()

    def __len__(self) -> int:
        return len(self.rows)

    def values(self) -> list[dict[str, Any]]:
        return list(self.rows.values())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
