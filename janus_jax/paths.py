"""One path type for everything a run reads or writes in its workdir: a local folder or a `gs://` URL alike.

A TPU pod has no shared disk, so its runs keep their workdir in a bucket. `to_path` gives an
`etils.epath.Path` (the path type orbax itself uses): local paths behave as `pathlib` ones, `gs://` ones
go through gcsfs, which signs in with Application Default Credentials (on a TPU VM, its service account);
orbax writes the checkpoint arrays through TensorStore, which reads the same credentials.

Object stores differ from disks in three ways this module hides: an object is written whole or not at
all but cannot be renamed cheaply (`write_atomic`), it cannot be appended to (`LineAppender`), and
`epath`'s `absolute()` and `resolve()` mangle URLs (`absolute`).
"""

from __future__ import annotations

import os

import fsspec
from etils import epath

# Every host of a pod, and TensorStore (which writes the checkpoint arrays), change the bucket behind
# gcsfs's back: list it afresh each time instead of from gcsfs's never-expiring listing cache.
fsspec.config.conf.setdefault("gcs", {})["use_listings_cache"] = False


def is_url(path: str | os.PathLike) -> bool:
    """True for `gs://...` (or any `scheme://`) paths, False for local ones."""
    return "://" in os.fspath(path)


def to_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an `epath.Path`, as given (relative local paths stay relative)."""
    return epath.Path(path)


def absolute(path: str | os.PathLike, *, resolve: bool = False) -> epath.Path:
    """A local path made absolute (`resolve`: symlinks resolved too); a URL unchanged."""
    path = epath.Path(path)
    if is_url(path):
        return path
    return path.resolve() if resolve else path.absolute()


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a whole file so that readers see the old content or the new, never part of it.

    A local file goes through a temporary file, fsync and a rename; a GCS object through one upload,
    which appears only when complete (a rename there would be a copy).
    """
    path = epath.Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_url(path):
        path.write_bytes(payload)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class LineAppender:
    """Appends text lines to a file, so that a kill loses at most the line being written.

    A local file is opened for appending once; a torn last line left by a killed run is sealed with a
    newline first. A GCS object cannot be appended to: its text is kept here and the whole object is
    uploaded again with each line (one upload per call, fine for logs written every few seconds).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = epath.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._text = b""
        if is_url(self.path):
            self._text = self.path.read_bytes() if self.path.exists() else b""
            if self._text and not self._text.endswith(b"\n"):
                self._text += b"\n"
            return
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        if self._fd >= 0:
            os.write(self._fd, data)
        else:
            self._text += data
            self.path.write_bytes(self._text)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
