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

import io
import logging
import os
import socket
import threading
import urllib.parse
import uuid

import fsspec
from etils import epath

# Every host of a pod, and TensorStore (which writes the checkpoint arrays), change the bucket behind
# gcsfs's back: list it afresh each time instead of from gcsfs's never-expiring listing cache.
fsspec.config.conf.setdefault("gcs", {})["use_listings_cache"] = False

log = logging.getLogger(__name__)

# How often a busy append log (LLM call caches, eval and data_gen rows: many lines a second) is uploaded to
# GCS; a kill loses at most this many seconds of rows, which the resumed run redoes.
BUSY_LOG_FLUSH_S = 5.0


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


def write_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """Save a matplotlib figure as one whole file (`write_atomic`), so figures land in a bucket as well."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig_kwargs)
    write_atomic(path, buffer.getvalue())


class LineAppender:
    """Appends text lines to a file, so that a kill loses at most the line being written.

    A local file is opened for appending once; a torn last line left by a killed run is sealed with a
    newline first. A GCS object cannot be appended to: new lines are uploaded as a small object and
    composed onto the end of the file server-side (GCS `compose`), so an upload costs the new lines, never
    the whole file. With `flush_interval_s=0` every `write` is uploaded before it returns (logs written
    every few seconds); with more, a background thread uploads what was written at most that often and
    `write` never waits on the network (logs of thousands of rows a minute: LLM calls, eval rows). A kill
    then loses the rows of the last interval, which a resumed run redoes.
    """

    def __init__(self, path: str | os.PathLike, *, flush_interval_s: float = 0.0):
        self.path = epath.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._fs = None  # the object store's filesystem, for a URL
        if is_url(self.path):
            self._open_object(flush_interval_s)
            return
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def _open_object(self, flush_interval_s: float) -> None:
        self._fs, self._key = fsspec.core.url_to_fs(os.fspath(self.path))
        self._pending = bytearray()
        self._lock = threading.Lock()  # guards _pending and _error
        self._upload_lock = threading.Lock()  # one upload at a time, in order
        self._error: BaseException | None = None
        self._exists = self._fs.exists(self._key)
        if self._exists:
            size = self._fs.size(self._key)
            if size and self._fs.cat_file(self._key, start=size - 1)[-1:] != b"\n":
                self._pending += b"\n"  # seal a killed run's torn last line
        self._stop = threading.Event()
        self._flusher = None
        if flush_interval_s > 0:
            self._flusher = threading.Thread(target=self._flush_every, args=(flush_interval_s,), daemon=True)
            self._flusher.start()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        if self._fd >= 0:
            os.write(self._fd, data)
            return
        with self._lock:
            self._raise_upload_error()
            self._pending += data
        if self._flusher is None:
            self.flush()

    def flush(self) -> None:
        """Upload the lines written so far (GCS; a local file has nothing buffered)."""
        if self._fs is None:
            return
        with self._upload_lock:
            with self._lock:
                data = bytes(self._pending)
                self._pending.clear()
            if not data:
                return
            try:
                self._upload(data)
            except BaseException:
                with self._lock:  # kept: the next flush sends them again
                    self._pending[:0] = data
                raise

    def _upload(self, data: bytes) -> None:
        if not self._exists:
            self._fs.pipe_file(self._key, data)
            self._exists = True
            return
        part = f"{self._key.rsplit('/', 1)[0]}/.{self.path.name}.{uuid.uuid4().hex}.part"
        self._fs.pipe_file(part, data)
        try:
            self._fs.merge(self._key, [self._key, part])
        finally:
            self._fs.rm_file(part)

    def _flush_every(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.flush()
            except Exception as error:  # noqa: BLE001 - raised by the next write; close retries the upload
                log.warning("%s: upload failed; retried at the next flush", self.path, exc_info=True)
                with self._lock:
                    self._error = error

    def _raise_upload_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise OSError(f"{self.path}: uploading appended lines failed: {error}") from error

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            return
        if self._fs is not None:
            self._stop.set()
            if self._flusher is not None:
                self._flusher.join()
            self._error = None  # the flush below retries what a failed upload kept, and raises if it fails again
            self.flush()


class StorageUnavailable(ValueError):
    """A `gs://` output that cannot be written: no credentials, no such bucket, no network or no permission."""


def _bucket(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def check_writable(path: str | os.PathLike) -> None:
    """Fail in seconds, naming the bucket, when a `gs://` output cannot be written (a local path passes).

    Called by janus-train, `python -m eval` and `python -m data_gen` before any work: without it a missing
    credential or a mistyped bucket surfaces only at the first write, after minutes of compilation or paid
    LLM calls, and gcsfs first retries an unreachable endpoint for about half a minute. Checks, in order:
    credentials (Application Default Credentials; none are needed with STORAGE_EMULATOR_HOST), that the
    endpoint answers, and that a probe object can be written to and removed from the folder.
    """
    url = os.fspath(path)
    if not is_url(url):
        return
    bucket = _bucket(url)
    if not url.startswith("gs://"):
        raise StorageUnavailable(f"{url}: only local paths and gs:// URLs can be written")
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    emulated = emulator not in ("", "default")
    if not emulated:
        import google.auth
        import google.auth.exceptions

        try:
            google.auth.default()
        except google.auth.exceptions.GoogleAuthError as error:
            raise StorageUnavailable(
                f"cannot write to {bucket} ({url}): no Google Cloud credentials ({error}). On a TPU VM the VM's "
                "service account is used; elsewhere run `gcloud auth application-default login` or set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
            ) from None
    endpoint = (emulator if "://" in emulator else f"http://{emulator}") if emulated else "https://storage.googleapis.com"
    host = urllib.parse.urlsplit(endpoint)
    try:
        socket.create_connection((host.hostname, host.port or (443 if host.scheme == "https" else 80)), 10).close()
    except OSError as error:
        raise StorageUnavailable(
            f"cannot write to {bucket} ({url}): the storage endpoint {endpoint} cannot be reached ({error}); "
            "check the network (and STORAGE_EMULATOR_HOST, when set)"
        ) from None
    probe = f"{url.rstrip('/')}/.write-probe-{uuid.uuid4().hex}"
    fs, key = fsspec.core.url_to_fs(probe)
    try:
        fs.pipe_file(key, b"")
        fs.rm_file(key)
    except FileNotFoundError:
        raise StorageUnavailable(f"cannot write to {bucket} ({url}): the bucket does not exist") from None
    except Exception as error:  # noqa: BLE001 - gcsfs raises OSError, HttpError or auth errors alike
        raise StorageUnavailable(
            f"cannot write to {bucket} ({url}): {type(error).__name__}: {error}. Check that these credentials "
            "may create and delete objects in the bucket (roles/storage.objectAdmin)"
        ) from None
