"""A scripted OpenAI-compatible HTTP server for tests and benchmarks.

Real HTTP on 127.0.0.1 (a free port), so the real ``openai`` client is exercised end to end. A test gives
a *rules* function that decides every answer; the server counts and records every call and can inject
the faults real endpoints produce.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` and the Batch API subset
(``POST /v1/files``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches/{id}``).

Usage::

    from scripted_openai_server import Fault, Reply, ScriptedOpenAIServer

    def rules(call):                       # call: Call (body, messages, system, user, attempt, index)
        if call.attempt == 0 and "flaky" in call.user:
            return Fault.rate_limit(retry_after=0.05)   # first try: 429 with Retry-After
        return Reply("hello", completion_tokens=3)      # or just return a str

    with ScriptedOpenAIServer(rules, latency_s=0.0) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test")
        ...
        assert server.call_count == 2

A rule returns ``str`` (the content), ``Reply`` (content, finish_reason, usage, extra delay) or ``Fault``:
``Fault.status(code, retry_after=None)`` (429/500/... with an OpenAI-style error body),
``Fault.rate_limit(retry_after)``, ``Fault.server_error()``, ``Fault.hang(seconds)`` (answer nothing for that
long, then drop the connection: a client timeout), ``Fault.truncated_json()`` (a 200 whose JSON body is cut in
half), ``Fault.invalid_json()`` (a 200 whose body is not JSON), ``Fault.empty_content()`` (a well-formed
completion with empty content), ``Fault.disconnect()`` (close the socket without answering).

``call.attempt`` counts earlier calls with an identical request body, so "fail first, then succeed"
rules are one line. ``latency_s`` delays every chat answer (the throughput benchmark uses 0.2 s).
Batch requests go through the same rules; faults there become per-line errors in the output file.

Run standalone (prints ``PORT <n>`` on stdout and serves until killed)::

    python tests/scripted_openai_server.py --latency-s 0.2            # echo answers (the benchmark)
    python tests/scripted_openai_server.py --port 8011 --rules data_gen  # a data_gen demo without an LLM
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import hashlib
import itertools
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Call", "Fault", "Reply", "ScriptedOpenAIServer", "echo_rules"]


@dataclass
class Reply:
    """A normal completion. Token counts default to whitespace word counts.

    ``top_logprobs``: per generated token, ``{token: logprob}`` of its most likely alternatives (the first
    one is the sampled token); sent in OpenAI's ``choices[i].logprobs.content`` layout when the request
    asks for ``logprobs``."""

    content: str | None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay_s: float = 0.0
    top_logprobs: list[dict[str, float]] | None = None


@dataclass
class Fault:
    """A failure to inject instead of a normal completion."""

    kind: str
    status: int = 500
    retry_after: float | None = None
    seconds: float = 0.0
    message: str = "injected fault"

    @classmethod
    def status_code(cls, status: int, retry_after: float | None = None, message: str = "injected") -> Fault:
        return cls("status", status=status, retry_after=retry_after, message=message)

    @classmethod
    def rate_limit(cls, retry_after: float = 0.05) -> Fault:
        return cls("status", status=429, retry_after=retry_after, message="Rate limit reached")

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls("status", status=status, message="The server had an error")

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        return cls("hang", seconds=seconds)

    @classmethod
    def truncated_json(cls) -> Fault:
        return cls("truncated_json")

    @classmethod
    def invalid_json(cls) -> Fault:
        return cls("invalid_json")

    @classmethod
    def empty_content(cls) -> Fault:
        return cls("empty_content")

    @classmethod
    def disconnect(cls) -> Fault:
        return cls("disconnect")


@dataclass
class Call:
    """One chat request as the rules function sees it."""

    body: dict[str, Any]
    index: int  # global order of arrival, from 0
    attempt: int  # earlier calls with an identical body
    via_batch: bool = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    @property
    def model(self) -> str:
        return self.body.get("model", "")

    @property
    def system(self) -> str:
        return "\n".join(_text(m) for m in self.messages if m.get("role") == "system")

    @property
    def user(self) -> str:
        users = [_text(m) for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


Rules = Callable[[Call], "str | Reply | Fault"]


def echo_rules(call: Call) -> str:
    """Default rules: answer with a short digest of the last user message."""
    return "echo: " + call.user[:64]


def body_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    polls: int = 0
    output_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})


class ScriptedOpenAIServer:
    """Threaded HTTP server answering OpenAI-style requests from ``rules``; see the module docstring."""

    def __init__(
        self,
        rules: Rules = echo_rules,
        *,
        latency_s: float = 0.0,
        models: tuple[str, ...] = ("scripted",),
        batch_polls_until_done: int = 1,
        port: int = 0,
    ):
        self.rules = rules
        self.latency_s = latency_s
        self.models = models
        self.batch_polls_until_done = batch_polls_until_done
        self._port = port
        self.calls: list[Call] = []  # every chat call, in arrival order (batch lines included)
        self.requests: Counter[str] = Counter()  # "METHOD /path" -> count, every endpoint
        self.auth_headers: list[str] = []
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, _Batch] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self) -> ScriptedOpenAIServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = _Server(("127.0.0.1", self._port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ----------------------------------------------------------------------------------------- counting
    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)

    def calls_where(self, predicate: Callable[[Call], bool]) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if predicate(c)]

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.requests.clear()

    def _register(self, body: dict[str, Any], via_batch: bool) -> Call:
        with self._lock:
            key = body_key(body)
            call = Call(body=body, index=len(self.calls), attempt=self._attempts[key], via_batch=via_batch)
            self._attempts[key] += 1
            self.calls.append(call)
            return call

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    # ----------------------------------------------------------------------------------------- answers
    def completion_body(self, call: Call, reply: Reply) -> dict[str, Any]:
        n = int(call.body.get("n") or 1)
        content = reply.content
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = sum(len(_text(m).split()) for m in call.messages)
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = len((content or "").split()) * n
        logprobs = None
        if call.body.get("logprobs") and reply.top_logprobs is not None:
            k = int(call.body.get("top_logprobs") or 0)
            logprobs = {
                "content": [
                    {
                        "token": next(iter(position)),
                        "logprob": next(iter(position.values())),
                        "top_logprobs": [{"token": t, "logprob": lp} for t, lp in list(position.items())[:k]],
                    }
                    for position in reply.top_logprobs
                ]
            }
        return {
            "id": self._new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": reply.finish_reason,
                    "logprobs": logprobs,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def decide(self, call: Call) -> Reply | Fault:
        outcome = self.rules(call)
        if isinstance(outcome, str) or outcome is None:
            return Reply(outcome)
        return outcome


def _error_body(message: str, status: int) -> dict[str, Any]:
    kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: many clients connect at once


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
    server_state: ScriptedOpenAIServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass

    # ----------------------------------------------------------------------------------------- plumbing
    def _send(
        self, status: int, payload: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _count(self, method: str) -> str:
        path = self.path.split("?", 1)[0]
        with self.server_state._lock:
            self.server_state.requests[f"{method} {path}"] += 1
            self.server_state.auth_headers.append(self.headers.get("Authorization", ""))
        return path

    # ----------------------------------------------------------------------------------------- routes
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        state = self.server_state
        path = self._count("GET")
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in state.models]
            return self._send_json(200, {"object": "list", "data": data})
        if path.startswith("/v1/batches/"):
            return self._get_batch(path.rsplit("/", 1)[1])
        if path.startswith("/v1/files/") and path.endswith("/content"):
            file_id = path.split("/")[3]
            if file_id not in state._files:
                return self._send_json(404, _error_body(f"no file {file_id}", 404))
            return self._send(200, state._files[file_id], content_type="application/octet-stream")
        self._send_json(404, _error_body(f"unknown path {path}", 404))

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        path = self._count("POST")
        raw = self._read_body()
        if path == "/v1/chat/completions":
            return self._chat(raw)
        if path == "/v1/files":
            return self._upload(raw)
        if path == "/v1/batches":
            return self._create_batch(raw)
        self._send_json(404, _error_body(f"unknown path {path}", 404))

    def _chat(self, raw: bytes) -> None:
        state = self.server_state
        try:
            body = json.loads(raw)
        except ValueError:
            return self._send_json(400, _error_body("request body is not JSON", 400))
        call = state._register(body, via_batch=False)
        outcome = state.decide(call)
        time.sleep(state.latency_s + (outcome.delay_s if isinstance(outcome, Reply) else 0.0))
        if isinstance(outcome, Reply):
            return self._send_json(200, state.completion_body(call, outcome))
        if outcome.kind == "status":
            headers = {} if outcome.retry_after is None else {"Retry-After": f"{outcome.retry_after:g}"}
            return self._send_json(outcome.status, _error_body(outcome.message, outcome.status), headers)
        if outcome.kind == "hang":
            time.sleep(outcome.seconds)
            self.close_connection = True
            return None
        if outcome.kind == "disconnect":
            self.close_connection = True
            return None
        if outcome.kind == "empty_content":
            return self._send_json(200, state.completion_body(call, Reply("", completion_tokens=0)))
        full = json.dumps(state.completion_body(call, Reply("this reply was cut off"))).encode()
        if outcome.kind == "truncated_json":
            return self._send(200, full[: len(full) // 2])
        if outcome.kind == "invalid_json":
            return self._send(200, b"<html>502 Bad Gateway</html> not json")
        raise ValueError(f"unknown fault kind {outcome.kind!r}")

    def _upload(self, raw: bytes) -> None:
        state = self.server_state
        header = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        content, purpose, filename = b"", "", "upload.jsonl"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                content = part.get_payload(decode=True) or b""
                filename = part.get_filename() or filename
            elif name == "purpose":
                purpose = (part.get_payload(decode=True) or b"").decode()
        file_id = state._new_id("file")
        with state._lock:
            state._files[file_id] = content
        self._send_json(
            200,
            {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": purpose,
                "status": "processed",
            },
        )

    def _create_batch(self, raw: bytes) -> None:
        state = self.server_state
        body = json.loads(raw)
        if body.get("input_file_id") not in state._files:
            return self._send_json(400, _error_body("unknown input_file_id", 400))
        batch = _Batch(
            id=state._new_id("batch"),
            input_file_id=body["input_file_id"],
            endpoint=body["endpoint"],
            completion_window=body.get("completion_window", "24h"),
        )
        with state._lock:
            state._batches[batch.id] = batch
        self._send_json(200, self._batch_json(batch, "validating"))

    def _get_batch(self, batch_id: str) -> None:
        state = self.server_state
        batch = state._batches.get(batch_id)
        if batch is None:
            return self._send_json(404, _error_body(f"no batch {batch_id}", 404))
        batch.polls += 1
        if batch.polls < state.batch_polls_until_done:
            return self._send_json(200, self._batch_json(batch, "in_progress"))
        if batch.output_file_id is None:
            self._run_batch(batch)
        self._send_json(200, self._batch_json(batch, "completed"))

    def _run_batch(self, batch: _Batch) -> None:
        state = self.server_state
        lines = []
        for raw_line in state._files[batch.input_file_id].decode().splitlines():
            if not raw_line.strip():
                continue
            item = json.loads(raw_line)
            call = state._register(item["body"], via_batch=True)
            outcome = state.decide(call)
            batch.counts["total"] += 1
            if isinstance(outcome, Reply):
                response = {
                    "status_code": 200,
                    "request_id": state._new_id("req"),
                    "body": state.completion_body(call, outcome),
                }
                lines.append(
                    {
                        "id": state._new_id("batch_req"),
                        "custom_id": item["custom_id"],
                        "response": response,
                        "error": None,
                    }
                )
                batch.counts["completed"] += 1
            else:
                status = outcome.status if outcome.kind == "status" else 500
                response = {
                    "status_code": status,
                    "request_id": state._new_id("req"),
                    "body": _error_body(outcome.message, status),
                }
                lines.append(
                    {
                        "id": state._new_id("batch_req"),
                        "custom_id": item["custom_id"],
                        "response": response,
                        "error": None,
                    }
                )
                batch.counts["failed"] += 1
        output_id = state._new_id("file")
        with state._lock:
            state._files[output_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
        batch.output_file_id = output_id

    @staticmethod
    def _batch_json(batch: _Batch, status: str) -> dict[str, Any]:
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": batch.output_file_id if status == "completed" else None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": batch.counts,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before every chat answer")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--rules",
        choices=("echo", "data_gen"),
        default="echo",
        help="echo: repeat the user message; data_gen: valid replies for every data_gen stage (a demo)",
    )
    args = parser.parse_args(argv)
    if args.rules == "data_gen":
        from data_gen_rules import synth_rules as rules  # beside this file
    else:
        rules = echo_rules
    server = ScriptedOpenAIServer(rules, latency_s=args.latency_s, port=args.port).start()
    print(f"PORT {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
