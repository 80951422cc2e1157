"""`python tests/gcs_emulator.py --port=PORT --bucket=NAME`: gcp-storage-emulator, in memory, with one bucket,
until the process that started it exits.

Two things real GCS does that the emulator (2026.7.19) does not, added here and nothing else changed:
- downloads carry the object's `x-goog-generation` header and honour `ifGenerationNotMatch` /
  `ifGenerationMatch`. TensorStore revalidates its cached OCDBT manifest that way during every orbax
  save; without them it fails with "Malformed StorageGeneration".
- `POST .../o/SRC/moveTo/o/DST` (objects.move), which gcsfs uses to rename; without it gcsfs retries
  for ~40 s before falling back to copy and delete.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from http import HTTPStatus

from gcp_storage_emulator import server, settings
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_emulator_download = objects.download


def _download(request, response, storage, *args, **kwargs):
    try:
        generation = str(storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])["generation"])
    except NotFound:
        return _emulator_download(request, response, storage, *args, **kwargs)  # its 404
    response["x-goog-generation"] = generation
    if_not_match = request.query.get("ifGenerationNotMatch")
    if if_not_match and if_not_match[0] == generation:
        response.status = HTTPStatus.NOT_MODIFIED
        return
    if_match = request.query.get("ifGenerationMatch")
    if if_match and if_match[0] != generation:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return
    return _emulator_download(request, response, storage, *args, **kwargs)


def _move(request, response, storage, *args, **kwargs):
    bucket, source, dest = (request.params[k] for k in ("bucket_name", "object_id", "dest_object_id"))
    try:
        moved = objects._copy(request.base_url, storage, bucket, source, bucket, dest)
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    objects._delete(storage, bucket, source)
    response.json(moved)


_OBJECT = rf"^{settings.API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
_MOVE_ROUTE = (_OBJECT + r"/moveTo/o/(?P<dest_object_id>.*[^/]+)$", {server.POST: _move})
objects.download = _download
server.HANDLERS = (
    _MOVE_ROUTE,
    *((pattern, {m: _download if h is _emulator_download else h for m, h in handlers.items()})
      for pattern, handlers in server.HANDLERS),
)  # fmt: skip


def _exit_with(parent: int) -> None:
    """Serve until the process that started the emulator has exited (not merely finished its tests:
    tensorboardX uploads its event files once more while Python shuts down)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main() -> None:
    from gcp_storage_emulator.__main__ import main as emulator_main

    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()
    bucket = f"--default-bucket={args.bucket}"
    emulator_main(["start", "--host=127.0.0.1", f"--port={args.port}", "--in-memory", bucket])


if __name__ == "__main__":
    main()
