"""Content-addressed, append-only record of every completed LLM call.

Why a file of JSON lines: each entry is one ``write()`` to a file opened with O_APPEND, so a killed
process never loses an answered call and never leaves a half-written entry in the middle of the file
(at worst a torn last line, which is skipped with a warning and sealed off by the next append). Entries
are fsync'd at most ``fsync_interval_s`` after they are written and on close, so they also survive a
machine crash. The file is indexed by key -> byte offset, so a cache of millions of long replies costs
little memory; texts are read back only on a hit.

A ``gs://`` cache is downloaded once into a local working copy (read and indexed as above; an unlinked
temporary file, so a killed process leaves no copy behind) and every new entry is also appended to the object
(`janus_jax.paths.LineAppender`, uploaded every few seconds).

The key (see ``request_key``) hashes model + messages + sampling parameters + response format, never
the parser, so a better parser re-scores cached replies for free.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from janus_jax.paths import BUSY_LOG_FLUSH_S, LineAppender, is_url, to_path

log = logging.getLogger(__name__)

_PREFIX = b'{"key": "'
_KEY_LEN = 64


def request_key(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body (None values dropped, floats normalised)."""
    canonical = {k: (float(v) if k in ("temperature", "top_p") else v) for k, v in body.items() if v is not None}
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Maps request keys to completed replies, persisted in one append-only JSONL file."""

    def __init__(self, path: str | os.PathLike[str], fsync_interval_s: float = 0.05):
        self.path = to_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path  # what is read and appended here: the cache, or a gs:// cache's local copy
        self._mirror: LineAppender | None = None
        if is_url(self.path):
            fd, local = tempfile.mkstemp(prefix="llm_cache.", suffix=".jsonl")
            with os.fdopen(fd, "wb") as copy:
                if self.path.exists():
                    with self.path.open("rb") as source:
                        shutil.copyfileobj(source, copy)
            self._file = local
            self._mirror = LineAppender(self.path, flush_interval_s=BUSY_LOG_FLUSH_S)
        self.fsync_interval_s = fsync_interval_s
        self.skipped_lines = 0
        self._index: dict[str, tuple[int, int]] = {}
        self._load_index()
        self._fd = os.open(self._file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        if self._mirror is not None:
            os.remove(self._file)  # the open descriptor keeps the copy: nothing is left behind, even after a kill
        self._seal_torn_tail()
        self._dirty = False
        self._fsync_scheduled = False
        self._last_fsync = time.monotonic()

    def _load_index(self) -> None:
        if not os.path.exists(self._file):
            return
        offset = 0
        with open(self._file, "rb") as f:
            for lineno, line in enumerate(f, 1):
                length = len(line)
                key = line[len(_PREFIX) : len(_PREFIX) + _KEY_LEN].decode("ascii", "replace")
                if line.endswith(b"\n") and line.startswith(_PREFIX) and len(key) == _KEY_LEN:
                    self._index[key] = (offset, length)
                else:
                    self.skipped_lines += 1
                    log.warning(
                        "cache %s: skipping unreadable line %d (a write cut short by a kill?)", self.path, lineno
                    )
                offset += length

    def _seal_torn_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> dict[str, Any] | None:
        where = self._index.get(key)
        if where is None:
            return None
        try:
            entry = json.loads(os.pread(self._fd, where[1], where[0]))
        except ValueError:
            log.warning("cache %s: entry %s is corrupt; treating it as a miss", self.path, key[:12])
            del self._index[key]
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Append ``entry`` under ``key`` (the newest entry for a key wins)."""
        record = {"key": key, **{k: v for k, v in entry.items() if k != "key"}}
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self._fd, line)  # O_APPEND: lands whole at the end, even with other writers
        if written != len(line):  # only on a full disk or similar; the torn line is skipped on load
            raise OSError(f"cache {self.path}: short write ({written} of {len(line)} bytes)")
        if self._mirror is not None:
            self._mirror.write(line.decode("utf-8"))
        offset = os.lseek(self._fd, 0, os.SEEK_CUR) - len(line)
        self._index[key] = (offset, len(line))
        self._dirty = True
        self._schedule_fsync()

    def _schedule_fsync(self) -> None:
        if time.monotonic() - self._last_fsync >= self.fsync_interval_s:
            self.sync()
            return
        if self._fsync_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.sync()
            return
        self._fsync_scheduled = True
        loop.call_later(self.fsync_interval_s, self.sync)

    def sync(self) -> None:
        self._fsync_scheduled = False
        if self._dirty and self._fd >= 0:
            os.fsync(self._fd)
            self._dirty = False
        self._last_fsync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None
