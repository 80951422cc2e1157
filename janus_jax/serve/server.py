"""The HTTP side of janus-serve: an ASGI app served by uvicorn, in front of the batching Engine.

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health. Streaming
uses server-sent events. Why uvicorn rather than `http.server`: one event loop holds thousands of
open connections (a thread per connection and a listen backlog of 5 refused bursts of a few hundred),
h11 parses HTTP strictly (chunked bodies, keep-alive, pipelining), and a client that goes away is a
disconnect event, not a BrokenPipeError: its request is cancelled and its slots freed.

Each finished request is logged as one line (status, token counts, latency), never with the API key
or the prompt text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from janus_jax.sample import stop_string_holdback
from janus_jax.serve.engine import Engine
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
request_log = logging.getLogger("janus_jax.serve.requests")

MAX_BODY_BYTES = 1 << 20
BACKLOG = 2048  # pending connections the kernel queues before accept (capped by net.core.somaxconn)
KEEP_ALIVE_S = 120  # idle keep-alive connections are closed after this


class ClientGone(Exception):
    """The client closed its connection before the response was complete."""


class _Exchange:
    """One request/response: the ASGI channels and what the log line reports."""

    def __init__(self, scope: dict, receive: Any, send: Any):
        self.scope, self.receive, self._send = scope, receive, send
        self.method: str = scope["method"]
        self.path: str = scope["path"].rstrip("/") or "/"
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.status = 0
        self.started = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.request_id = "-"

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.started = status, True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, body: dict, close: bool = False) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await self.start(status, headers)
        await self.body(data)

    async def read_body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes")
            if not message.get("more_body"):
                return b"".join(chunks)

    async def wait_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass


class _Events:
    """Engine events for one job, delivered into the event loop; raises ClientGone if the client leaves."""

    def __init__(self, loop: asyncio.AbstractEventLoop, exchange: _Exchange):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = loop
        self.watcher = asyncio.ensure_future(exchange.wait_disconnect())

    def notify(self, event: tuple[str, Any]) -> None:  # called from the engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def next(self) -> tuple[str, Any]:
        """The next event; consecutive partial snapshots are merged (each holds everything so far)."""
        if self.queue.empty():
            getter = asyncio.ensure_future(self.queue.get())
            await asyncio.wait({getter, self.watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                raise ClientGone
            event = getter.result()
        else:
            event = self.queue.get_nowait()
        while event[0] == "partial" and not self.queue.empty():
            event = self.queue.get_nowait()
        return event

    def close(self) -> None:
        self.watcher.cancel()


class JanusApp:
    """The ASGI application: routing, auth, body limits, and the engine round trip."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        model_name: str,
        *,
        limits: Limits,
        api_key: str | None,
        max_body_bytes: int,
        log_requests: bool,
        template: str = "mistral_inst",
    ):
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.template = template
        self.limits, self.api_key, self.max_body_bytes = limits, api_key, max_body_bytes
        self.log_requests = log_requests
        self.started = int(time.time())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        exchange = _Exchange(scope, receive, send)
        start = time.perf_counter()
        try:
            await self._dispatch(exchange)
        except ClientGone:
            exchange.status = 499  # nginx's code for "client closed the request"
        except APIError as e:
            await self._error(exchange, e)
        except Exception as e:  # nothing a client sends may take the server down
            log.exception("unhandled error on %s %s", exchange.method, exchange.path)
            await self._error(exchange, APIError(500, f"internal error: {type(e).__name__}", kind="server_error"))
        finally:
            if self.log_requests:
                request_log.info(
                    "%s %s %d %s prompt_tokens=%d completion_tokens=%d %.3fs",
                    exchange.method,
                    exchange.path,
                    exchange.status,
                    exchange.request_id,
                    exchange.prompt_tokens,
                    exchange.completion_tokens,
                    time.perf_counter() - start,
                )

    async def _error(self, exchange: _Exchange, error: APIError) -> None:
        if exchange.started:  # mid-stream: the error goes into the stream
            exchange.status = error.status
            await _event(exchange, {"error": error.body()["error"]})
            await exchange.body(b"")
        else:
            await exchange.json(error.status, error.body(), close=error.status in (411, 413))

    def _check_auth(self, exchange: _Exchange) -> None:
        if self.api_key is None:
            return
        scheme, _, token = exchange.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise APIError(
                401, "missing or incorrect API key (send 'Authorization: Bearer <key>')", code="invalid_api_key"
            )

    async def _dispatch(self, exchange: _Exchange) -> None:
        routes = {
            ("GET", "/health"): self._health,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): lambda e: self._generate(e, "chat"),
            ("POST", "/v1/completions"): lambda e: self._generate(e, "completion"),
        }
        handler = routes.get((exchange.method, exchange.path))
        if handler is None:
            if any(p == exchange.path for _, p in routes):
                raise APIError(405, f"method {exchange.method} is not allowed on {exchange.path}")
            raise APIError(404, f"no route {exchange.method} {exchange.path}", code="unknown_url")
        self._check_auth(exchange)
        await handler(exchange)

    async def _health(self, exchange: _Exchange) -> None:
        stats = self.engine.stats
        await exchange.json(
            200,
            {
                "status": "ok",
                "model": self.model_name,
                "rows": stats.rows,
                "decoding": self.engine.busy_rows,
                "generated_tokens": stats.generated_tokens,
            },
        )

    async def _models(self, exchange: _Exchange) -> None:
        model = {"id": self.model_name, "object": "model", "created": self.started, "owned_by": "janus-jax"}
        await exchange.json(200, {"object": "list", "data": [model]})

    async def _generate(self, exchange: _Exchange, kind: str) -> None:
        raw = await exchange.read_body(self.max_body_bytes)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"could not parse the JSON body: {e}") from None
        # Tokenizing (and later detokenizing) long texts runs off the event loop.
        request = await asyncio.to_thread(
            parse_request, kind, body, self.tokenizer, self.model_name, self.limits, self.template
        )
        exchange.request_id = request.id
        exchange.prompt_tokens = sum(len(p) for p in request.prompts)
        events = _Events(asyncio.get_running_loop(), exchange)
        job = self.engine.submit(request, events.notify)
        try:
            if request.stream:
                await self._stream(exchange, request, events)
                return
            event, payload = await events.next()
            if event == "error":
                raise payload
            exchange.completion_tokens = usage(request, payload)["completion_tokens"]
            body = await asyncio.to_thread(response_body, request, self.model_name, payload, self.tokenizer)
            await exchange.json(200, body)
        finally:
            events.close()
            if not job.answered:
                self.engine.cancel(job)

    async def _stream(self, exchange: _Exchange, request: GenerationRequest, events: _Events) -> None:
        model, tok = self.model_name, self.tokenizer
        event, payload = await events.next()
        if event == "error":
            raise payload  # nothing sent yet: a normal JSON error
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await exchange.start(200, headers)
        count = request.n * len(request.prompts)
        sent_text, sent_tokens, finished = [""] * count, [0] * count, [False] * count
        if request.kind == "chat":  # the role comes first, as OpenAI sends it
            first = [chunk_choice(request, i, "", None, first=True) for i in range(count)]
            await _event(exchange, chunk_body(request, model, first))
        while True:
            if event == "error":
                raise payload
            choices = []
            for i, c in enumerate(payload):
                if finished[i]:
                    continue
                text = c.text
                if c.finish_reason is None:
                    text = text[: len(text) - stop_string_holdback(text, request.params.stop)].rstrip("\ufffd")
                if not text.startswith(sent_text[i]):
                    text = sent_text[i]  # a detokenization that changed its mind: wait for more
                if text == sent_text[i] and c.finish_reason is None:
                    continue
                logprobs = None
                if request.logprobs:
                    logprobs = _new_logprobs(tok, request, c, sent_tokens[i])
                choices.append(chunk_choice(request, i, text[len(sent_text[i]) :], c.finish_reason, logprobs))
                sent_text[i] = text
                sent_tokens[i] = len(c.token_ids)
                finished[i] = c.finish_reason is not None
            for choice in choices:
                await _event(exchange, chunk_body(request, model, [choice]))
            if event == "done":
                exchange.completion_tokens = usage(request, payload)["completion_tokens"]
                if request.include_usage:
                    await _event(exchange, chunk_body(request, model, [], usage(request, payload)))
                break
            event, payload = await events.next()
        await _event(exchange, "[DONE]")
        await exchange.body(b"")


def _new_logprobs(tok: Tokenizer, request: GenerationRequest, completion: Any, already: int) -> dict[str, Any]:
    """The logprobs of the tokens not sent yet, in the request kind's format."""
    if request.kind == "chat":
        return {"content": chat_logprobs(tok, completion, request.top_logprobs)["content"][already:]}
    whole = completion_logprobs(tok, completion, request.top_logprobs)
    return {k: (v[already:] if isinstance(v, list) else v) for k, v in whole.items()}


async def _event(exchange: _Exchange, body: Any) -> None:
    payload = body if isinstance(body, str) else json.dumps(body)
    await exchange.body(f"data: {payload}\n\n".encode(), more=True)


def listening_socket(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A bound, listening TCP socket (port 0 picks a free one), IPv6 when the host is an IPv6 address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog, reuse_port=False)


class JanusServer:
    """The socket, the app and the uvicorn server that runs it; `serve_forever` blocks until `shutdown`."""

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
        log_requests: bool = True,
        template: str = "mistral_inst",
    ):
        self.engine = engine
        self.app = JanusApp(
            engine,
            tokenizer,
            model_name,
            limits=limits,
            api_key=api_key,
            max_body_bytes=max_body_bytes,
            log_requests=log_requests,
            template=template,
        )
        self.socket = listening_socket(*address)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            access_log=False,  # our own one line per request, without client addresses
            log_config=None,
            timeout_keep_alive=KEEP_ALIVE_S,
            backlog=BACKLOG,
            ws="none",
        )
        # uvicorn logs access lines whenever its access logger has a handler, a root one included; ours
        # replaces them (theirs carry client addresses and query strings).
        logging.getLogger("uvicorn.access").propagate = False
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 30) -> None:
        """Stop accepting, finish the open responses, return once serve_forever has."""
        self._server.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()
