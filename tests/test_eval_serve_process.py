"""eval's wait for the janus-serve it starts: the key it inherits is sent, and every failure other than
"not listening yet" ends the wait at once with the reason (it used to poll 401s for 15 minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from eval.serve_process import ServerNotReady, free_port, wait_until_ready

# A stand-in for janus-serve's HTTP contract: GET /v1/models, Bearer auth from $JANUS_SERVE_API_KEY.
CHILD = textwrap.dedent("""
    import os, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    port, delay, status = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    if status < 0:
        sys.exit(-status)
    key = os.environ.get("JANUS_SERVE_API_KEY")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                code = 401
            else:
                code = status
            body = b'{"data": []}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    time.sleep(delay)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
""")


def start(port: int, delay: float = 0.0, status: int = 200, key: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "JANUS_SERVE_API_KEY"}
    if key:
        env["JANUS_SERVE_API_KEY"] = key
    return subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(delay), str(status)], env=env)


@pytest.fixture
def child():
    started = []

    def run(**kwargs):
        port = free_port()
        process = start(port, **kwargs)
        started.append(process)
        return process, f"http://127.0.0.1:{port}/v1"

    yield run
    for process in started:
        process.kill()
        process.wait()


def test_ready_with_the_inherited_key_after_a_slow_start(child):
    process, url = child(delay=0.5, key="serve-secret")
    began = time.monotonic()
    wait_until_ready(process, url, "serve-secret", timeout_s=30, poll_s=0.1)
    assert time.monotonic() - began < 10


def test_a_refused_key_fails_at_once_naming_the_variable(child):
    process, url = child(key="serve-secret")
    began = time.monotonic()
    with pytest.raises(ServerNotReady, match=r"HTTP 401 although eval sent no key \(\$JANUS_SERVE_API_KEY"):
        wait_until_ready(process, url, None, timeout_s=60, poll_s=0.1)
    with pytest.raises(ServerNotReady, match="HTTP 401 although eval sent the key in"):
        wait_until_ready(process, url, "another-key", timeout_s=60, poll_s=0.1)
    assert time.monotonic() - began < 20  # not the timeout


def test_other_http_errors_and_an_exited_server_fail_at_once(child):
    process, url = child(status=500)
    with pytest.raises(ServerNotReady, match="HTTP 500"):
        wait_until_ready(process, url, None, timeout_s=60, poll_s=0.1)
    process, url = child(status=-3)  # exits with code 3 before listening
    with pytest.raises(ServerNotReady, match="exited with code 3"):
        wait_until_ready(process, url, None, timeout_s=60, poll_s=0.1)


def test_a_server_that_never_listens_times_out(child):
    process, url = child(delay=60)
    with pytest.raises(ServerNotReady, match="did not answer .* within 0.5 s"):
        wait_until_ready(process, url, None, timeout_s=0.5, poll_s=0.1)


# A stand-in for `python -m janus_jax.cli.serve ...`: records its arguments, then answers GET /v1/models.
FAKE_SERVE = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    args = sys.argv[1:]
    with open(sys.argv[0] + ".log", "a") as log:
        log.write(" ".join(args) + "\\n")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    HTTPServer(("127.0.0.1", int(args[args.index("--port") + 1])), Handler).serve_forever()
""")


def test_a_checkpoint_server_starts_at_first_use_and_restarts_for_more_samples(tmp_path, monkeypatch):
    """Nothing starts until a run asks for the URL; a run asking for more samples per request than the server
    admits (janus-serve's default --max-n is 16) gets it restarted with --max-n (and --max-batch above 32)."""
    import types

    from eval import serve_process

    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_SERVE}")
    fake.chmod(0o755)
    monkeypatch.setattr(serve_process, "sys", types.SimpleNamespace(executable=str(fake), stderr=sys.stderr))
    monkeypatch.delenv("JANUS_SERVE_API_KEY", raising=False)
    log = tmp_path / "python.log"

    def options(line: str) -> str:
        return line.split(" --model-name m")[1].strip()

    with serve_process.CheckpointServer("runs/ckpt", "m") as server:
        assert not log.exists() and server.max_n == 0
        url = server.base_url(1)
        assert server.base_url(16) == url and server.max_n == 16  # the default admits it: same server
        started = log.read_text().splitlines()
        assert len(started) == 1 and started[0].startswith("-m janus_jax.cli.serve --model runs/ckpt --host 127.0.0.1")
        assert options(started[0]) == ""
        server.base_url(25)
        server.base_url(40)
        assert [options(line) for line in log.read_text().splitlines()[1:]] == [
            "--max-n 25", "--max-n 40 --max-batch 40"]
        assert server.max_n == 40
    assert server.max_n == 0 and server._process is None
