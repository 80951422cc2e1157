"""The cached form of a chat completion, shared by live calls and the Batch API.

A cache entry keeps what callers read back (texts, finish reasons, token log-probabilities when they
were asked for, usage), not the whole response, so the cache stays small and replays identically
whichever path answered.
"""

from __future__ import annotations

import time
from typing import Any


class MalformedReply(Exception):
    """A 200 answer that is not a usable chat completion (asked again: it may be a glitch)."""


class LogprobsMissing(MalformedReply):
    """Log-probabilities were asked for and the server sent none: it ignores them, asking again won't help."""


def entry_from_completion(data: dict[str, Any], *, logprobs: bool = False, batch: bool = False) -> dict[str, Any]:
    """The cache entry of a chat completion body.

    With ``logprobs`` (the request asked for them) every choice must carry ``logprobs.content``, the
    list of ``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}...]}``
    that OpenAI, vLLM and janus-serve return; it is kept as is under ``"logprobs"``, one list per choice.
    """
    choices = data.get("choices") or []
    if not choices:
        raise MalformedReply("the completion has no choices")
    choices = sorted(choices, key=lambda c: c.get("index") or 0)
    usage = data.get("usage") or {}
    entry: dict[str, Any] = {
        "texts": [((c.get("message") or {}).get("content") or "") for c in choices],
        "finish_reasons": [c.get("finish_reason") or "" for c in choices],
        "usage": {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
        },
        "model": data.get("model"),
        "time": round(time.time(), 3),
    }
    if logprobs:
        entry["logprobs"] = [_token_logprobs(c) for c in choices]
    if batch:
        entry["batch"] = True
    return entry


def _token_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        raise LogprobsMissing(f"log-probabilities were requested but choice {choice.get('index') or 0} has none")
    for position, token in enumerate(content):
        if not isinstance(token, dict) or "token" not in token or not isinstance(token.get("logprob"), (int, float)):
            raise MalformedReply(f"choice {choice.get('index') or 0}: token {position} has no token/logprob")
    return content


def shorten(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for failure reasons."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
