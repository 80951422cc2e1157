"""Start ``janus-serve`` for a checkpoint on a free 127.0.0.1 port, for as long as eval runs need it.

The server inherits the environment, so with ``JANUS_SERVE_API_KEY`` set it requires that key: the
readiness poll and the run's client send it. A refused key, any other HTTP error, or a server that exits
ends the wait at once with the reason; only "not listening yet" is waited out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from janus_jax.serve import DEFAULT_MAX_BATCH, DEFAULT_MAX_N

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


def capacity_args(max_n: int) -> list[str]:
    """janus-serve options that admit requests of up to ``max_n`` samples (RealToxicityPrompts asks for 25 a
    call, above the default ``--max-n`` of 16; above 32, ``--max-batch`` grows with it)."""
    if max_n <= DEFAULT_MAX_N:
        return []
    return ["--max-n", str(max_n)] + (["--max-batch", str(max_n)] if max_n > DEFAULT_MAX_BATCH else [])


class CheckpointServer:
    """A ``janus-serve`` for a checkpoint on a free 127.0.0.1 port, started by the first ``base_url()`` call, so
    that runs with nothing left to generate start no server; several runs can share one (``python -m eval
    paper-table``). Its output is inherited, so start-up errors are visible. Use it as a context manager.
    """

    def __init__(self, checkpoint: str | Path, model_name: str, startup_timeout_s: float = 900.0):
        self.checkpoint = str(checkpoint)
        self.model_name = model_name
        self.startup_timeout_s = startup_timeout_s
        self.max_n = 0  # the most samples per request the running server admits (0: not running)
        self._process: subprocess.Popen | None = None
        self._url = ""

    def base_url(self, max_n: int = 1) -> str:
        """The OpenAI-compatible base URL of the server, started now if it is not running; one that admits
        fewer than ``max_n`` samples per request is restarted with room for them."""
        if self._process is not None and max_n > self.max_n:
            print(f"[eval] restarting janus-serve to admit {max_n} samples per request", file=sys.stderr, flush=True)
            self.close()
        if self._process is None:
            port = free_port()
            command = [sys.executable, "-m", "janus_jax.cli.serve", "--model", self.checkpoint, "--host",
                       "127.0.0.1", "--port", str(port), "--model-name", self.model_name, *capacity_args(max_n)]
            self._process = subprocess.Popen(command)
            self._url = f"http://127.0.0.1:{port}/v1"
            try:
                wait_until_ready(self._process, self._url, os.environ.get(SERVE_KEY_ENV) or None,
                                 self.startup_timeout_s)
            except BaseException:
                self.close()
                raise
            self.max_n = max(max_n, DEFAULT_MAX_N)
        return self._url

    def close(self) -> None:
        """Stop the server (nothing to do when it never started)."""
        process, self._process, self.max_n = self._process, None, 0
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> CheckpointServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
