"""One async chat client for every OpenAI-compatible endpoint (OpenAI, vLLM, janus-serve).

Why a layer over ``openai.AsyncOpenAI``: data synthesis and judging make hundreds of thousands of calls,
so every call must be cached on disk (a killed run resumes without paying twice), bounded (concurrency
and per-minute limits), retried politely (exponential backoff with jitter, ``Retry-After`` honoured) and
accounted for (tokens, cost, and every failure with its reason). A call that still fails comes back as a
``ChatResult`` with ``error`` set instead of an exception, so one bad row never kills a whole stage.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from janus_jax.llm.batch import BatchQueue
from janus_jax.llm.cache import ResponseCache, request_key
from janus_jax.llm.completion import LogprobsMissing, MalformedReply, entry_from_completion, shorten
from janus_jax.llm.pricing import cost_usd, price_for
from janus_jax.llm.ratelimit import RateLimiter

Message = dict[str, Any]
Validator = Callable[[str], Any]

LOCAL_API_KEY = "EMPTY"  # what vLLM and janus-serve accept when no key is configured


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatResult:
    """The outcome of one ``chat`` call.

    ``texts`` holds the n reply texts, ``parsed`` what ``validate`` returned for each (None without a
    validator). ``logprobs`` (only when the call asked for them) holds, per reply, its tokens in
    OpenAI's ``logprobs.content`` form: ``{"token", "logprob", "bytes", "top_logprobs": [...]}``.
    ``error`` is None on success, else ``"<kind>: <detail>"`` where kind is one of
    rate_limited, server_error, timeout, connection, malformed_response, http_<status>, empty_reply,
    truncated, invalid_reply. ``cached`` is True when no API call was made. ``deferred`` is True only in
    batch mode, for a request queued for the Batch API instead of being sent.
    """

    texts: list[str] = field(default_factory=list)
    parsed: list[Any] | None = None
    finish_reasons: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    cached: bool = True
    error: str | None = None
    attempts: int = 0
    key: str = ""
    deferred: bool = False
    logprobs: list[list[dict[str, Any]]] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.deferred

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    @property
    def value(self) -> Any:
        """The first parsed value (the validator's output), or the first text without a validator."""
        return self.parsed[0] if self.parsed is not None else self.text

    @property
    def error_kind(self) -> str | None:
        return None if self.error is None else self.error.split(":", 1)[0]

    def top_logprobs(self, position: int = 0, choice: int = 0) -> dict[str, float]:
        """token -> log-probability of the most likely tokens at one position of one reply.

        The AlpacaEval weighted annotator reads position 0 (the judge's ``m``/``M``). Empty when the
        reply is shorter; an error when the call did not ask for ``top_logprobs``.
        """
        if self.logprobs is None:
            raise ValueError("this result has no log-probabilities: call chat(..., logprobs=True, top_logprobs=k)")
        tokens = self.logprobs[choice]
        if position >= len(tokens):
            return {}
        return {t["token"]: float(t["logprob"]) for t in tokens[position].get("top_logprobs") or []}

    def _take(self, entry: dict[str, Any]) -> None:
        """Show one cache entry's replies (an empty entry clears them)."""
        self.texts = list(entry.get("texts") or [])
        self.finish_reasons = list(entry.get("finish_reasons") or [])
        self.logprobs = entry.get("logprobs")


@dataclass
class ClientStats:
    """Running totals. ``cost_usd`` counts only calls made now; cache hits are free."""

    requests: int = 0  # HTTP requests sent, retries included
    calls: int = 0  # completions received
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0  # replies rejected (empty, truncated, invalid) and asked again
    failures: Counter[str] = field(default_factory=Counter)  # final failures by kind
    failure_log: list[dict[str, str]] = field(default_factory=list)  # every final failure: key + reason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: bool = False  # the model has no price in the table: cost_usd stays 0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "reasks": self.reasks,
            "failed": self.failed,
            "failures": dict(self.failures),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "unpriced": self.unpriced,
        }

    def line(self) -> str:
        cost = "n/a" if self.unpriced else f"${self.cost_usd:.4f}"
        return (
            f"calls={self.calls} hits={self.cache_hits} fail={self.failed} "
            f"tok={self.prompt_tokens + self.completion_tokens} cost={cost}"
        )


@dataclass
class ChatRequest:
    """One request for ``chat_many``/``run_many``: the messages plus any keyword argument of ``chat``."""

    messages: list[Message]
    options: dict[str, Any] = field(default_factory=dict)


class _CallFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LLMClient:
    """Async chat client with cache, limits, retries and accounting; see the module docstring.

    ``api_key_env`` names the environment variable holding the key; the key itself is never stored in
    results, stats, logs or error messages. Without a ``base_url`` (i.e. OpenAI) a missing key is an
    error; for a local server a placeholder key is used. ``cache_path=None`` disables the cache.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 64,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 6,
        timeout_s: float = 600.0,
        cache_path: str | os.PathLike[str] | None = None,
        max_reasks: int = 2,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        prices: dict[str, tuple[float, float]] | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.model = model
        self.base_url = base_url
        self._api_key = os.environ.get(api_key_env) or ""
        if not self._api_key:
            if base_url is None:
                raise ValueError(
                    f"no API key: set the environment variable {api_key_env} "
                    "(or pass base_url for a local server that needs none)"
                )
            self._api_key = LOCAL_API_KEY
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.max_reasks = max_reasks
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.price = price_for(model, prices)
        self.cache = ResponseCache(cache_path) if cache_path is not None else None
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)
        self.stats = ClientStats(unpriced=self.price is None)
        # Batch mode (see janus_jax.llm.batch): while True, cache misses go to the queue instead of the API.
        self.defer_to_batch = False
        self.batch_queue = BatchQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._openai: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def __repr__(self) -> str:  # no key in here, ever
        return f"LLMClient(model={self.model!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------------------------ plumbing
    def _bind_loop(self) -> None:
        """The openai client and the semaphore belong to one event loop; rebuild them for a new one."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._openai = openai.AsyncOpenAI(
                api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
            )
            self._semaphore = asyncio.Semaphore(self.max_concurrency)

    @property
    def openai(self) -> openai.AsyncOpenAI:
        """The underlying SDK client for the running event loop (the Batch API uses it)."""
        self._bind_loop()
        assert self._openai is not None
        return self._openai

    def scrub(self, text: str) -> str:
        """Remove the API key from any text headed for a log, a result or a file."""
        if self._api_key and self._api_key != LOCAL_API_KEY:
            text = text.replace(self._api_key, "***")
        return text

    def request_body(
        self,
        messages: Sequence[Message],
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int | None = None,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of a chat completion request (what the cache key and the Batch API hash).

        ``logprobs``/``top_logprobs`` are sent (and so enter the cache key) only when asked for, so
        requests without them keep the keys they always had.
        """
        if top_logprobs is not None and not logprobs:
            raise ValueError("top_logprobs needs logprobs=True (as in the OpenAI API)")
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": float(temperature),
            "top_p": float(top_p),
            "max_tokens": max_tokens,
            "n": n if n != 1 else None,
            "response_format": response_format,
            "seed": seed,
            "stop": stop,
            "logprobs": True if logprobs else None,
            "top_logprobs": top_logprobs,
        }
        body.update(extra_body or {})
        return {k: v for k, v in body.items() if v is not None}

    @staticmethod
    def key_for(body: dict[str, Any], reask: int) -> str:
        """Re-asks of a rejected reply get their own keys, so a resumed run replays them from the cache."""
        return request_key(body if reask == 0 else {**body, "_reask": reask})

    def _entry_cost(self, entry: dict[str, Any]) -> float:
        usage = entry.get("usage") or {}
        return cost_usd(
            self.price, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), batch=bool(entry.get("batch"))
        )

    def record_answer(self, key: str, entry: dict[str, Any]) -> None:
        """Account for a completion received (live or from a batch) and cache it."""
        usage = entry.get("usage") or {}
        self.stats.calls += 1
        self.stats.prompt_tokens += usage.get("prompt_tokens", 0)
        self.stats.completion_tokens += usage.get("completion_tokens", 0)
        self.stats.cost_usd += self._entry_cost(entry)
        if self.cache is not None:
            self.cache.put(key, entry)

    def _fail(self, key: str, reason: str) -> str:
        reason = self.scrub(reason)
        self.stats.failures[reason.split(":", 1)[0]] += 1
        self.stats.failure_log.append({"key": key, "reason": reason})
        return reason

    # ------------------------------------------------------------------------------------ one call
    async def chat(
        self,
        messages: Sequence[Message],
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int | None = None,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        extra_body: dict[str, Any] | None = None,
        validate: Validator | None = None,
        accept_truncated: bool = True,
        max_reasks: int | None = None,
    ) -> ChatResult:
        """Ask once (from the cache when possible) and check the reply.

        An empty reply, a reply cut off at ``max_tokens`` (unless ``accept_truncated``) or one that
        ``validate`` rejects (by raising any exception; its message becomes the reason) is asked again,
        up to ``max_reasks`` times, and then returned as a failure. API errors are retried up to
        ``max_retries`` times with backoff, then returned as a failure. ``logprobs=True`` (and
        ``top_logprobs=k``, 0-20) returns token log-probabilities in ``ChatResult.logprobs``.
        """
        body = self.request_body(
            messages,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            n=n,
            response_format=response_format,
            seed=seed,
            stop=stop,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            extra_body=extra_body,
        )
        reasks = self.max_reasks if max_reasks is None else max_reasks
        result = ChatResult()
        for attempt in range(reasks + 1):
            result.attempts = attempt + 1
            result.key = self.key_for(body, attempt)
            entry = await self._answer(result, body)
            if entry is None:  # failed, or deferred to the Batch API
                return result
            result._take(entry)
            result.parsed, reason = self._check(entry, validate, accept_truncated)
            if not reason:
                return result
            if attempt < reasks:
                self.stats.reasks += 1
        result.error = self._fail(result.key, f"{reason} (after {reasks + 1} attempts)")
        return result

    async def _answer(self, result: ChatResult, body: dict[str, Any]) -> dict[str, Any] | None:
        """The cache entry for ``result.key``: from the cache, else from the API (accounted in ``result``).

        None when there is none to check: the call failed (``result.error``) or went to the Batch API
        queue (``result.deferred``).
        """
        key = result.key
        entry = self.cache.get(key) if self.cache is not None else None
        if entry is not None:
            self.stats.cache_hits += 1
            return entry
        result.cached = False
        failure = self.batch_queue.errors.get(key)
        if failure is None and self.defer_to_batch:
            self.batch_queue.add(key, body)
            result.deferred = True
            result._take({})
            return None
        if failure is None:
            try:
                entry = await self._call(body)
            except _CallFailed as failed:
                failure = failed.reason
        if failure is not None:
            result.error = self._fail(key, failure)
            result._take({})
            return None
        self.record_answer(key, entry)
        usage = entry.get("usage") or {}
        result.usage.prompt_tokens += usage.get("prompt_tokens", 0)
        result.usage.completion_tokens += usage.get("completion_tokens", 0)
        result.cost_usd += self._entry_cost(entry)
        return entry

    @staticmethod
    def _check(
        entry: dict[str, Any], validate: Validator | None, accept_truncated: bool
    ) -> tuple[list[Any] | None, str]:
        texts = entry.get("texts") or []
        if not texts or any(not (t or "").strip() for t in texts):
            return None, "empty_reply: the model returned no text"
        if not accept_truncated and "length" in (entry.get("finish_reasons") or []):
            return None, "truncated: the reply hit max_tokens"
        if validate is None:
            return None, ""
        try:
            return [validate(t) for t in texts], ""
        except Exception as error:  # the validator's message is the reason
            detail = str(error).replace("\n", " ")[:300] or type(error).__name__
            return None, f"invalid_reply: {detail}"

    def _estimate_tokens(self, body: dict[str, Any]) -> int:
        chars = sum(len(json.dumps(m.get("content", ""))) for m in body["messages"])
        return chars // 4 + (body.get("max_tokens") or 1024) * body.get("n", 1)

    async def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        """One completion with retries; returns the cache entry or raises _CallFailed."""
        self._bind_loop()
        assert self._semaphore is not None and self._openai is not None
        reason = ""
        for retry in range(self.max_retries + 1):
            await self.limiter.acquire(self._estimate_tokens(body))
            retry_after: float | None = None
            async with self._semaphore:
                self.stats.requests += 1
                try:
                    # The SDK's generic POST with the body as built: it skips re-validating the typed
                    # parameters (a third of the client's CPU time per call) and keeps vendor extras
                    # (e.g. vLLM's repetition_penalty) at the top level, where servers expect them.
                    raw = await self._openai.post("/chat/completions", cast_to=bytes, body=body)
                    return entry_from_completion(json.loads(raw), logprobs=bool(body.get("logprobs")))
                except LogprobsMissing as error:
                    raise _CallFailed(f"malformed_response: {error}") from None
                except openai.APIStatusError as error:
                    status = error.status_code
                    detail = error.body.get("message") if isinstance(error.body, dict) else None
                    reason = f"{_status_kind(status)}: HTTP {status}: {shorten(detail or error.message)}"
                    if not (status in (408, 409, 429) or status >= 500):
                        raise _CallFailed(reason) from None
                    retry_after = _retry_after_s(error.response.headers)
                except openai.APITimeoutError:
                    reason = f"timeout: no answer within {self.timeout_s:g} s"
                except openai.APIConnectionError as error:
                    reason = f"connection: {shorten(str(error.__cause__ or error))}"
                except (ValueError, openai.APIResponseValidationError, MalformedReply) as error:
                    reason = f"malformed_response: {shorten(str(error))}"
            if retry == self.max_retries:
                break
            self.stats.retries += 1
            await asyncio.sleep(self._backoff(retry, retry_after))
        raise _CallFailed(f"{reason} (after {self.max_retries + 1} tries)")

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server said when: wait that long, plus a little jitter
            return retry_after * (1.0 + 0.1 * random.random())
        cap = min(self.backoff_max_s, self.backoff_base_s * 2**retry)
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": never ~0, never in lockstep

    # ------------------------------------------------------------------------------------ many calls
    async def chat_many(
        self,
        requests: Iterable[ChatRequest],
        *,
        on_result: Callable[[int, ChatResult], None] | None = None,
        desc: str | None = None,
        progress: bool = True,
        total: int | None = None,
    ) -> list[ChatResult]:
        """Run requests concurrently (at most ``max_concurrency`` in flight) and return results in order.

        ``on_result(index, result)`` is called as each one finishes, so callers can persist rows at once.
        """
        from tqdm.auto import tqdm

        items = list(requests)
        results: list[ChatResult | None] = [None] * len(items)
        bar = tqdm(total=total or len(items), desc=desc, disable=not progress, dynamic_ncols=True)
        queue = iter(enumerate(items))

        async def worker() -> None:
            for index, request in queue:
                result = await self.chat(request.messages, **request.options)
                results[index] = result
                if on_result is not None:
                    on_result(index, result)
                bar.update(1)
                bar.set_postfix_str(self.stats.line(), refresh=False)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_concurrency, max(1, len(items))))))
        finally:
            bar.close()
            if self.cache is not None:
                self.cache.sync()
        return [r for r in results if r is not None]

    async def aclose(self) -> None:
        if self._openai is not None:
            await self._openai.close()
            self._openai = None
            self._loop = None
        if self.cache is not None:
            self.cache.sync()

    def close(self) -> None:
        """Flush the cache; call once when done (the HTTP client dies with its event loop)."""
        if self.cache is not None:
            self.cache.close()
            self.cache = None


def run_many(
    client: LLMClient, requests: Iterable[ChatRequest], *, desc: str | None = None, progress: bool = True
) -> list[ChatResult]:
    """Synchronous ``chat_many`` for scripts and notebooks without an event loop."""

    async def _run() -> list[ChatResult]:
        try:
            return await client.chat_many(requests, desc=desc, progress=progress)
        finally:
            await client.aclose()

    return asyncio.run(_run())


# ---------------------------------------------------------------------------------------- helpers
def _status_kind(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return f"http_{status}"


def _retry_after_s(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), if present."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            if scale != 1.0:
                continue
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                continue
    return None
