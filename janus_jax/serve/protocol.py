"""The OpenAI wire format: request validation, response and stream-chunk bodies, error bodies.

Validation happens here, in the request's own thread, so a bad request is answered with a 4xx
before it reaches the batch and can never disturb other requests.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from typing import Any

from janus_jax.prompts import get_template
from janus_jax.sample import JANUS_SAMPLING, Completion, SamplingParams
from janus_jax.serve import DEFAULT_MAX_N
from janus_jax.serve.chat import MessageError, render_chat_ids
from janus_jax.serve.slots import MAX_TOP_LOGPROBS
from janus_jax.tokenizer import Tokenizer

MAX_STOP_STRINGS = 4


class APIError(Exception):
    """An error answered to the client as OpenAI-style JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    max_tokens: int = 4096
    max_n: int = DEFAULT_MAX_N
    context: int = 32768


@dataclasses.dataclass
class GenerationRequest:
    """A validated request: `n` rows per prompt, each with its own seed."""

    kind: str  # "chat" | "completion"
    prompts: list[list[int]]
    n: int
    params: SamplingParams
    stream: bool
    include_usage: bool
    logprobs: bool
    id: str
    created: int
    top_logprobs: int = 0  # alternatives reported per token (with logprobs)

    def rows(self) -> list[tuple[list[int], SamplingParams]]:
        """One (prompt, params) per choice; choice i of a request draws with seed + i."""
        out = []
        for p, prompt in enumerate(self.prompts):
            for i in range(self.n):
                seed = (self.params.seed + p * self.n + i) % 2**32
                out.append((prompt, dataclasses.replace(self.params, seed=seed)))
        return out


def _number(body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise APIError(400, f"'{name}' must be a number, got {value!r}", param=name)
    if value < low or (low_open and value == low) or value > high:
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise APIError(400, f"'{name}'={value} is out of range {bound}", param=name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"'{name}' must be an integer, got {value!r}", param=name)
    if not low <= value <= high:
        raise APIError(400, f"'{name}'={value} is out of range [{low}, {high}]", param=name)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, "'stop' must be a non-empty string or a list of non-empty strings", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise APIError(400, f"'stop' has {len(stops)} strings; at most {MAX_STOP_STRINGS} are allowed", param="stop")
    return tuple(stops)


def _template_stop(kind: str, template: str) -> tuple[str, ...]:
    suffix = get_template(template).reply_suffix if kind == "chat" else ""
    return (suffix,) if suffix else ()


def parse_request(
    kind: str, body: Any, tok: Tokenizer, model_name: str, limits: Limits, template: str = "mistral_inst"
) -> GenerationRequest:
    """Validate an OpenAI chat/completions body into a GenerationRequest, or raise APIError (4xx).

    Chat prompts are formatted with `template`, the one the model was trained with; its reply suffix (ChatML's
    `<|im_end|>`) is a stop string, so replies come back without it."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required", param="model")
    if model != model_name:
        raise APIError(
            404,
            f"The model '{model}' does not exist; this server serves '{model_name}'",
            param="model",
            code="model_not_found",
        )
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise APIError(400, f"'{name}' is not supported (use 'repetition_penalty')", param=name)
    if body.get("echo"):
        raise APIError(400, "'echo' is not supported", param="echo")

    if kind == "chat":
        try:
            prompts = [render_chat_ids(tok, body.get("messages"), template)]
        except MessageError as e:
            raise APIError(400, str(e), param="messages") from None
        logprobs = body.get("logprobs") or False
        if not isinstance(logprobs, bool):
            raise APIError(400, "'logprobs' must be a boolean", param="logprobs")
        top = _integer(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
        if top and not logprobs:
            raise APIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        prompt = body.get("prompt")
        texts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise APIError(400, "'prompt' must be a string or a non-empty list of strings", param="prompt")
        prompts = [[tok.bos_id, *tok.encode(t)] for t in texts]
        lp = _integer(body, "logprobs", None, 0, 5)
        logprobs, top = lp is not None, lp or 0
        max_tokens = body.get("max_tokens")

    longest = max(len(p) for p in prompts)
    room = limits.context - longest
    if room < 1:
        raise APIError(
            400,
            f"the prompt has {longest} tokens; this model's context is {limits.context} tokens",
            param="messages" if kind == "chat" else "prompt",
            code="context_length_exceeded",
        )
    if max_tokens is None:
        max_tokens = min(JANUS_SAMPLING.max_new_tokens, limits.max_tokens, room)
    max_tokens = _integer({"max_tokens": max_tokens}, "max_tokens", None, 1, limits.max_tokens)
    if longest + max_tokens > limits.context:
        raise APIError(
            400,
            f"the prompt ({longest} tokens) plus max_tokens={max_tokens} exceeds the context of "
            f"{limits.context} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    n = _integer(body, "n", 1, 1, limits.max_n)
    if len(prompts) * n > limits.max_n:
        raise APIError(400, f"{len(prompts)} prompts x n={n} exceeds {limits.max_n} choices per request", param="n")
    seed = _integer(body, "seed", None, -(2**63), 2**63 - 1)
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", JANUS_SAMPLING.temperature, 0.0, 2.0),
        top_p=_number(body, "top_p", JANUS_SAMPLING.top_p, 0.0, 1.0, low_open=True),
        top_k=_integer(body, "top_k", 0, 0, 1 << 20),
        repetition_penalty=_number(
            body, "repetition_penalty", JANUS_SAMPLING.repetition_penalty, 0.0, 10.0, low_open=True
        ),
        seed=secrets.randbits(32) if seed is None else seed % 2**32,
        stop=_stop(body) + _template_stop(kind, template),
    )
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return GenerationRequest(
        kind=kind,
        prompts=prompts,
        n=n,
        params=params,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        logprobs=logprobs,
        id=f"{prefix}-{secrets.token_hex(12)}",
        created=int(time.time()),
        top_logprobs=top,
    )


# ---- response bodies ------------------------------------------------------------------------


def token_strings(tok: Tokenizer, ids: list[int]) -> list[str]:
    """Each token's text as it appears in the decoded reply (leading spaces included)."""
    out, previous = [], ""
    for k in range(1, len(ids) + 1):
        text = tok.decode(ids[:k])
        out.append(text[len(previous) :] if text.startswith(previous) else tok.decode(ids[k - 1 : k]))
        previous = text
    return out


def alternative_strings(tok: Tokenizer, ids: list[int], k: int, alternatives: list[int]) -> list[str]:
    """The text each alternative token would have added at position k (leading space included).

    Decoded after the few tokens before k rather than the whole prefix, so that twenty alternatives
    per token stay cheap on long replies.
    """
    context = ids[max(0, k - 4) : k]
    base = tok.decode(context)
    out = []
    for alt in alternatives:
        text = tok.decode([*context, alt])
        out.append(text[len(base) :] if text.startswith(base) else tok.decode([alt]))
    return out


def _top_entries(tok: Tokenizer, ids: list[int], top: Any, count: int) -> list[list[tuple[str, float]]]:
    """Per token, the `count` most likely (text, log-prob) pairs; empty lists when none were asked for."""
    if not count or top is None:
        return [[] for _ in ids]
    entries = []
    for k, alternatives in enumerate(top[: len(ids)]):
        alternatives = alternatives[:count]
        texts = alternative_strings(tok, ids, k, [a for a, _ in alternatives])
        entries.append([(t, lp) for t, (_, lp) in zip(texts, alternatives, strict=True)])
    return entries


def chat_logprobs(tok: Tokenizer, completion: Completion, count: int = 0) -> dict[str, Any]:
    """OpenAI chat `logprobs`: each reply token with its log-prob and its `count` top alternatives."""
    ids, content = completion.token_ids, []
    tops = _top_entries(tok, ids, completion.top_logprobs, count)
    for s, lp, top in zip(token_strings(tok, ids), completion.logprobs, tops, strict=True):
        alternatives = [{"token": t, "logprob": a, "bytes": list(t.encode())} for t, a in top]
        content.append({"token": s, "logprob": lp, "bytes": list(s.encode()), "top_logprobs": alternatives})
    return {"content": content}


def completion_logprobs(tok: Tokenizer, completion: Completion, count: int = 0) -> dict[str, Any]:
    """OpenAI legacy completions `logprobs`; `top_logprobs` maps each alternative's text to its log-prob."""
    strings = token_strings(tok, completion.token_ids)
    offsets, at = [], 0
    for s in strings:
        offsets.append(at)
        at += len(s)
    top = None
    if count:
        top = [dict(entries) for entries in _top_entries(tok, completion.token_ids, completion.top_logprobs, count)]
    return {"tokens": strings, "token_logprobs": completion.logprobs, "top_logprobs": top, "text_offset": offsets}


def usage(req: GenerationRequest, completions: list[Completion]) -> dict[str, int]:
    prompt = sum(len(p) for p in req.prompts)
    generated = sum(len(c.token_ids) + (c.finish_reason == "stop") for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def response_body(req: GenerationRequest, model: str, completions: list[Completion], tok: Tokenizer) -> dict:
    choices = []
    for i, c in enumerate(completions):
        if req.kind == "chat":
            choice = {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(tok, c, req.top_logprobs) if req.logprobs else None,
                "finish_reason": c.finish_reason,
            }
        else:
            choice = {
                "index": i,
                "text": c.text,
                "logprobs": completion_logprobs(tok, c, req.top_logprobs) if req.logprobs else None,
                "finish_reason": c.finish_reason,
            }
        choices.append(choice)
    return {
        "id": req.id,
        "object": "chat.completion" if req.kind == "chat" else "text_completion",
        "created": req.created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage(req, completions),
    }


def chunk_body(req: GenerationRequest, model: str, choices: list[dict], usage_: dict | None = None) -> dict:
    body = {
        "id": req.id,
        "object": "chat.completion.chunk" if req.kind == "chat" else "text_completion",
        "created": req.created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def chunk_choice(
    req: GenerationRequest, index: int, text: str, finish_reason: str | None, logprobs: Any = None, first: bool = False
) -> dict:
    if req.kind == "chat":
        delta: dict[str, Any] = {"content": text}
        if first:
            delta["role"] = "assistant"
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
