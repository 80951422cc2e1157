"""Start ``janus-serve`` for a checkpoint on a free 127.0.0.1 port, for the duration of an eval run."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def janus_serve(checkpoint: str | Path, model_name: str, startup_timeout_s: float = 900.0,
                extra_args: list[str] | None = None) -> Iterator[str]:
    """Yield the base URL of a ``janus-serve`` process serving ``checkpoint``; stop it afterwards.

    The server's output is inherited, so start-up errors are visible. A process that exits, or does not
    answer ``/v1/models`` in time, is an error.
    """
    port = free_port()
    command = [sys.executable, "-m", "janus_jax.serve.cli", "--checkpoint", str(checkpoint), "--host", "127.0.0.1",
               "--port", str(port), "--model-name", model_name, *(extra_args or [])]
    process = subprocess.Popen(command)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"janus-serve exited with code {process.returncode} before it was ready "
                                   f"(command: {' '.join(command)})")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2.0) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"janus-serve did not answer on {base_url} within {startup_timeout_s:g} s")
            time.sleep(1.0)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
