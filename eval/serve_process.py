"""Start ``janus-serve`` for a checkpoint on a free 127.0.0.1 port, for the duration of an eval run.

The server inherits the environment, so with ``JANUS_SERVE_API_KEY`` set it requires that key: the
readiness poll and the run's client send it. A refused key, any other HTTP error, or a server that exits
ends the wait at once with the reason; only "not listening yet" is waited out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SERVE_KEY_ENV = "JANUS_SERVE_API_KEY"


class ServerNotReady(RuntimeError):
    """janus-serve exited, refused the readiness check, or did not answer in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(process: subprocess.Popen, base_url: str, api_key: str | None, timeout_s: float,
                     poll_s: float = 1.0) -> None:
    """Poll ``GET {base_url}/models`` (with ``Authorization: Bearer api_key`` when given) until it answers 200.

    Connection errors mean "not up yet" and are retried until ``timeout_s``; an HTTP error status or an
    exited process raises ``ServerNotReady`` immediately.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise ServerNotReady(f"janus-serve exited with code {process.returncode} before it was ready "
                                 "(its output is above)")
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{base_url}/models", headers=headers),
                                        timeout=2.0) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                sent = f"the key in ${SERVE_KEY_ENV}" if api_key else f"no key (${SERVE_KEY_ENV} is not set)"
                raise ServerNotReady(f"janus-serve at {base_url} refused eval's readiness check with HTTP "
                                     f"{error.code} although eval sent {sent}") from None
            raise ServerNotReady(f"janus-serve at {base_url} answered the readiness check with HTTP {error.code}: "
                                 f"{error.reason}") from None
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise ServerNotReady(f"janus-serve did not answer on {base_url} within {timeout_s:g} s")
        time.sleep(poll_s)


@contextlib.contextmanager
def janus_serve(checkpoint: str | Path, model_name: str, startup_timeout_s: float = 900.0,
                extra_args: list[str] | None = None) -> Iterator[str]:
    """Yield the base URL of a ``janus-serve`` process serving ``checkpoint``; stop it afterwards.

    The server's output is inherited, so start-up errors are visible.
    """
    port = free_port()
    command = [sys.executable, "-m", "janus_jax.cli.serve", "--model", str(checkpoint), "--host", "127.0.0.1",
               "--port", str(port), "--model-name", model_name, *(extra_args or [])]
    process = subprocess.Popen(command)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(process, base_url, os.environ.get(SERVE_KEY_ENV) or None, startup_timeout_s)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
