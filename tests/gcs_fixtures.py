"""Fixtures of the gs:// tests: a GCS emulator (tests/gcs_emulator.py) on 127.0.0.1 and fresh folders in it.

A test module loads them with `pytest_plugins = ["gcs_fixtures"]`: one emulator serves the whole session.
"""

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bkt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A GCS emulator with one bucket, in memory (tests/gcs_emulator.py): the environment that points gcsfs,
    TensorStore and google-cloud-storage at it (for this process and the programs a test starts)."""
    pytest.importorskip("gcp_storage_emulator", reason="gs:// tests need gcp-storage-emulator (pip install -e .[test])")
    pytest.importorskip("gcsfs", reason="gs:// workdirs need gcsfs (pip install -e .)")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("gcs") / "emulator.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "gcs_emulator.py"), f"--port={port}", f"--bucket={BUCKET}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"the GCS emulator did not start: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.1)
    url = f"http://127.0.0.1:{port}"
    yield {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "t"}
    # No teardown: the emulator exits after this process does (tests/gcs_emulator.py), since tensorboardX's
    # gs:// writers upload once more while Python shuts down.


@pytest.fixture
def gcs_env(gcs_emulator, monkeypatch):
    for key, value in gcs_emulator.items():
        monkeypatch.setenv(key, value)
    return gcs_emulator


@pytest.fixture
def gs_dir(gcs_env, request):
    """A fresh gs:// folder for one test."""
    return f"gs://{BUCKET}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


def names(url: str) -> list[str]:
    """Names of the objects and folders directly under a gs:// folder."""
    from etils import epath

    return sorted(p.name for p in epath.Path(url).iterdir())


def download(url: str, local: Path) -> Path:
    """A local copy of a gs:// folder."""
    import fsspec

    fsspec.filesystem("gs").get(url.rstrip("/") + "/", str(local), recursive=True)
    return local
