"""The HTTP side of janus-serve: stdlib threads, one per connection, in front of the batching Engine.

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health. Streaming
uses server-sent events over chunked transfer encoding, so connections stay reusable.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from janus_jax.sample import stop_string_holdback
from janus_jax.serve.engine import Engine, Job
from janus_jax.serve.protocol import (
    APIError,
    GenerationRequest,
    Limits,
    chat_logprobs,
    chunk_body,
    chunk_choice,
    completion_logprobs,
    parse_request,
    response_body,
    usage,
)
from janus_jax.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class JanusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        engine: Engine,
        tokenizer: Tokenizer,
        model_name: str,
        *,
        limits: Limits,
        api_key: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        super().__init__(address, _Handler)
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.limits = limits
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.started = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: JanusServer
    timeout = 120  # idle keep-alive connections are closed after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing --
    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: APIError) -> None:
        self._send_json(error.status, error.body())

    def _check_auth(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(
                401, "missing or incorrect API key (send 'Authorization: Bearer <key>')", code="invalid_api_key"
            )

    def _read_json(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise APIError(411, "send the request body with a Content-Length header")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise APIError(411, "a Content-Length header is required") from None
        if length > self.server.max_body_bytes or length < 0:
            self.close_connection = True  # the body stays unread
            raise APIError(413, f"request body of {length} bytes exceeds the limit of {self.server.max_body_bytes}")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"could not parse the JSON body: {e}") from None

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        routes = {
            ("GET", "/health"): self._health,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): lambda: self._generate("chat"),
            ("POST", "/v1/completions"): lambda: self._generate("completion"),
        }
        try:
            handler = routes.get((method, path))
            if handler is None:
                if any(p == path for _, p in routes):
                    self.close_connection = method == "POST"
                    raise APIError(405, f"method {method} is not allowed on {path}")
                self.close_connection = method == "POST"
                raise APIError(404, f"no route {method} {path}", code="unknown_url")
            self._check_auth()
            handler()
        except APIError as e:
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # nothing a client sends may take the server down
            log.exception("unhandled error on %s %s", method, path)
            self.close_connection = True
            self._send_error(APIError(500, f"internal error: {type(e).__name__}", kind="server_error"))

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routes --
    def _health(self) -> None:
        stats = self.server.engine.stats
        self._send_json(
            200,
            {
                "status": "ok",
                "model": self.server.model_name,
                "waves": stats.waves,
                "rows": stats.rows,
                "generated_tokens": stats.generated_tokens,
            },
        )

    def _models(self) -> None:
        model = {
            "id": self.server.model_name,
            "object": "model",
            "created": self.server.started,
            "owned_by": "janus-jax",
        }
        self._send_json(200, {"object": "list", "data": [model]})

    def _generate(self, kind: str) -> None:
        body = self._read_json()
        request = parse_request(kind, body, self.server.tokenizer, self.server.model_name, self.server.limits)
        job = self.server.engine.submit(request)
        if request.stream:
            self._stream(job)
            return
        event, payload = job.events.get()
        if event == "error":
            raise payload
        self._send_json(200, response_body(request, self.server.model_name, payload, self.server.tokenizer))

    # -- server-sent events --
    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, body: Any) -> None:
        payload = body if isinstance(body, str) else json.dumps(body)
        self._write_chunk(f"data: {payload}\n\n".encode())

    def _stream(self, job: Job) -> None:
        request: GenerationRequest = job.request
        model, tok = self.server.model_name, self.server.tokenizer
        event, payload = job.events.get()
        if event == "error":
            raise payload  # nothing sent yet: a normal JSON error
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        count = len(job.rows)
        sent_text, sent_tokens, finished = [""] * count, [0] * count, [False] * count
        if request.kind == "chat":  # the role comes first, as OpenAI sends it
            self._event(
                chunk_body(request, model, [chunk_choice(request, i, "", None, first=True) for i in range(count)])
            )
        try:
            while True:
                if event == "error":
                    self._event({"error": payload.body()["error"]})
                    break
                choices = []
                for i, c in enumerate(payload):
                    if finished[i]:
                        continue
                    text = c.text
                    if c.finish_reason is None:
                        text = text[: len(text) - stop_string_holdback(text, request.params.stop)].rstrip("\ufffd")
                    if not text.startswith(sent_text[i]):
                        text = sent_text[i]  # a detokenization that changed its mind: wait for more
                    new_ids = c.token_ids[sent_tokens[i] :]
                    if text == sent_text[i] and c.finish_reason is None:
                        continue
                    logprobs = None
                    if request.logprobs:
                        make = chat_logprobs if request.kind == "chat" else completion_logprobs
                        logprobs = make(tok, c.token_ids, c.logprobs)
                        if request.kind == "chat":
                            logprobs = {"content": logprobs["content"][sent_tokens[i] :]}
                        else:
                            logprobs = {
                                k: (v[sent_tokens[i] :] if isinstance(v, list) else v) for k, v in logprobs.items()
                            }
                    choices.append(chunk_choice(request, i, text[len(sent_text[i]) :], c.finish_reason, logprobs))
                    sent_text[i] = text
                    sent_tokens[i] += len(new_ids)
                    finished[i] = c.finish_reason is not None
                for choice in choices:
                    self._event(chunk_body(request, model, [choice]))
                if event == "done":
                    if request.include_usage:
                        self._event(chunk_body(request, model, [], usage(request, payload)))
                    break
                event, payload = job.events.get()
            self._event("[DONE]")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            log.info("client of %s went away during streaming", request.id)
