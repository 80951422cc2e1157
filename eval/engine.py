"""Generation and judging over the shared LLM client, resumable row by row.

Rows already in ``responses.jsonl`` / ``judgments.jsonl`` are skipped on a rerun; calls that were in flight
when a run was killed come back from the client's on-disk cache, so a rerun repeats no judge call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eval.parsing import PARSER_VERSION
from eval.store import RowStore
from janus_jax.llm import ChatRequest, ChatResult, LLMClient

if TYPE_CHECKING:
    from eval.benches.common import Item, JudgeParser


@dataclass
class JudgeJob:
    """One judge call. ``key`` identifies the row (e.g. id + rubric + run); ``meta`` is stored beside it;
    ``parser`` names an entry of the benchmark's ``parsers``."""

    key: dict[str, Any]
    messages: list[dict[str, str]]
    options: dict[str, Any]
    parser: str
    meta: dict[str, Any] = field(default_factory=dict)


def _run(client: LLMClient, requests: list[ChatRequest], on_result: Callable[[int, ChatResult], None],
         desc: str, progress: bool) -> None:
    async def go() -> None:
        try:
            await client.chat_many(requests, on_result=on_result, desc=desc, progress=progress)
        finally:
            await client.aclose()

    if requests:
        asyncio.run(go())


# ----------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------


def chat_messages(system: str, turns: Sequence[str], answers: Sequence[str]) -> list[dict[str, str]]:
    """The evaluated model's conversation: the item's system message, then alternating turns."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for i, user in enumerate(turns):
        messages.append({"role": "user", "content": user})
        if i < len(answers):
            messages.append({"role": "assistant", "content": answers[i]})
    return messages


def generate(
    client: LLMClient,
    store: RowStore,
    items: Sequence[Item],
    options_for: Callable[[Item], dict[str, Any]],
    model_name: str,
    progress: bool = True,
) -> None:
    """Answer every item (all turns; turn k+1 sees the model's own turn-k answer); skip answered items.

    A failed call leaves a row with ``error`` set; it is retried on the next run.
    """
    todo = [it for it in items if (store.get((it.id,)) or {}).get("error", "missing") is not None]
    partial: dict[str, list[str]] = {it.id: [] for it in todo}
    failed: dict[str, str] = {}
    n_turns = max((len(it.turns) for it in todo), default=0)
    for turn in range(n_turns):
        active = [it for it in todo if turn < len(it.turns) and it.id not in failed]
        requests = [
            ChatRequest(chat_messages(it.system, it.turns[: turn + 1], partial[it.id]), options_for(it))
            for it in active
        ]

        def on_result(index: int, result: ChatResult, active: list[Item] = active) -> None:
            item = active[index]
            if result.ok:
                partial[item.id].append(result.text if len(result.texts) == 1 else result.texts)
            else:
                failed[item.id] = result.error or "unknown error"

        _run(client, requests, on_result, f"generate turn {turn + 1}", progress)
    for it in todo:
        options = {k: v for k, v in options_for(it).items() if k != "validate"}
        store.add({
            "id": it.id, "model": model_name, "answers": partial[it.id] if it.id not in failed else [],
            "sampling": options, "error": failed.get(it.id),
        })


# ----------------------------------------------------------------------------------------------------------
# Judging
# ----------------------------------------------------------------------------------------------------------


def judge(
    client: LLMClient,
    store: RowStore,
    jobs: Sequence[JudgeJob],
    parsers: Mapping[str, JudgeParser],
    template_hash: str,
    max_reasks: int,
    progress: bool = True,
) -> None:
    """Run judge jobs not yet stored; a reply the parser cannot read is asked again up to ``max_reasks``.

    Stored per row: judge model, template hash, parser version, sampling, the raw reply (so ``rescore`` can
    re-parse it), the parsed value and, on failure, the reason. API failures are retried on the next run;
    parse failures are final until a better parser re-reads them.
    """
    todo = []
    for job in jobs:
        done = store.get(tuple(str(v) for v in job.key.values()))
        if done is None or done.get("error_kind") == "api":
            todo.append(job)

    def validator(parser: str) -> Callable[[str], Any]:
        def validate(text: str) -> Any:
            value = parsers[parser].read(text)
            if value is None:
                raise ValueError(f"no {parser} verdict in the reply")
            return value

        return validate

    requests = [
        ChatRequest(job.messages, {**job.options, "validate": validator(job.parser), "max_reasks": max_reasks})
        for job in todo
    ]

    def on_result(index: int, result: ChatResult) -> None:
        job = todo[index]
        parser = parsers[job.parser]
        raw = result.texts[0] if result.texts else None
        if result.ok:
            value, error, kind = result.value, None, None
        elif raw is not None and (result.error or "").startswith(("invalid_reply", "empty_reply")):
            value, error, kind = None, result.error, "parse"
        else:
            value, error, kind = None, result.error, "api"
        row = {
            **job.key, **job.meta, "judge": client.model, "template_hash": template_hash,
            "parser": job.parser, "parser_version": PARSER_VERSION, "sampling": job.options,
            "raw": raw, "value": value, "error": error, "error_kind": kind, "attempts": result.attempts,
        }
        top = first_token_top_logprobs(result)
        if top is not None:
            row["top_logprobs"] = top
        if result.ok and parser.from_logprobs is not None:
            row["value"], row["annotation"] = parser.verdict(row)
        if raw is not None and parser.details:
            row.update(parser.details(raw))
        store.add(row)

    _run(client, requests, on_result, "judge", progress)


def first_token_top_logprobs(result: ChatResult) -> dict[str, float] | None:
    """``{token: logprob}`` of the first reply token's most likely alternatives, when the call asked for them
    (the ``logprobs=True, top_logprobs=k`` chat options) and the reply has a first token."""
    if not result.ok or result.logprobs is None:
        return None
    return result.top_logprobs(position=0, choice=0) or None


def rescore_rows(
    rows: Sequence[dict[str, Any]], parsers: Mapping[str, JudgeParser]
) -> tuple[list[dict[str, Any]], int]:
    """Re-parse stored raw judge replies with the current parsers; returns (rows, number changed).

    Rows that no LLM judged (no ``parser``: e.g. Perspective API scores) are kept as they are.
    """
    changed = 0
    out = []
    for row in rows:
        row = dict(row)
        if row.get("parser") in parsers and row.get("error_kind") != "api" and row.get("raw") is not None:
            parser = parsers[row["parser"]]
            value, annotation = parser.verdict(row)
            if value != row.get("value"):
                changed += 1
            row["value"] = value
            if annotation:
                row["annotation"] = annotation
            row["error"] = None if value is not None else "parse_failure: no verdict in the stored reply"
            row["error_kind"] = None if value is not None else "parse"
            if parser.details:
                row.update(parser.details(row["raw"]))
        row["parser_version"] = PARSER_VERSION
        out.append(row)
    return out, changed
