"""The OpenAI Batch API as a way to fill the cache at half price.

How it fits: set ``client.defer_to_batch = True`` and run a stage as usual; every cache miss is queued in
the client's ``BatchQueue`` (the result comes back with ``deferred=True``) instead of being sent. Then
``await run_batch(client, work_dir)`` writes the queued requests as JSONL (``custom_id`` = cache key),
uploads it, creates the batch, polls until it ends and merges every answer into the same cache. Running
the stage again is then all cache hits; replies that fail validation are queued again (their re-ask has
its own key), so a stage needs at most ``max_reasks + 1`` batch rounds.

Kill-safe: the batch id is written to ``work_dir`` before polling starts, so a restarted run polls the
batch it already paid for instead of submitting a second one. ``work_dir`` may be a ``gs://`` URL (every file
goes through ``janus_jax.paths``; each is written whole).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from etils import epath

from janus_jax.llm.completion import entry_from_completion, shorten
from janus_jax.paths import to_path, write_atomic

if TYPE_CHECKING:
    from janus_jax.llm.client import LLMClient

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS_PER_BATCH = 50_000  # OpenAI's limits per batch file
MAX_BYTES_PER_BATCH = 190 * 1024 * 1024
TERMINAL = {"completed", "failed", "expired", "cancelled"}


@dataclass
class BatchQueue:
    """Requests waiting for the Batch API (cache key -> request body) and the failures batches reported.

    A failure stays until the process ends, so ``chat`` returns it instead of queueing the same request
    again in the next round; a new run tries those requests afresh.
    """

    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, body: dict[str, Any]) -> None:
        self.pending[key] = body

    def take(self) -> dict[str, dict[str, Any]]:
        """Everything queued, emptying the queue."""
        pending, self.pending = self.pending, {}
        return pending


def _chunks(pending: dict[str, dict[str, Any]], max_requests: int, max_bytes: int) -> list[list[bytes]]:
    chunks: list[list[bytes]] = [[]]
    size = 0
    for key, body in pending.items():
        line = (
            json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}, ensure_ascii=False) + "\n"
        ).encode("utf-8")
        if chunks[-1] and (len(chunks[-1]) >= max_requests or size + len(line) > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line)
    return [c for c in chunks if c]


async def _submit(client: LLMClient, work_dir: epath.Path, lines: list[bytes], completion_window: str) -> epath.Path:
    number = len(list(work_dir.glob("batch-*.json")))
    input_path = work_dir / f"batch-{number:04d}.input.jsonl"
    payload = b"".join(lines)
    write_atomic(input_path, payload)
    uploaded = await client.openai.files.create(file=(input_path.name, payload), purpose="batch")
    batch = await client.openai.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window=completion_window
    )
    state_path = work_dir / f"batch-{number:04d}.json"
    keys = [json.loads(line)["custom_id"] for line in lines]
    write_atomic(state_path, json.dumps({"batch_id": batch.id, "input_file_id": uploaded.id, "keys": keys,
                                         "merged": False}, indent=1))
    log.info("submitted batch %s with %d requests", batch.id, len(keys))
    return state_path


async def _download(client: LLMClient, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    content = await client.openai.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines() if line.strip()]


def _asked_logprobs(input_path: epath.Path) -> set[str]:
    """The keys of a batch's input file whose requests asked for log-probabilities."""
    if not input_path.exists():
        return set()
    lines = (json.loads(line) for line in input_path.read_text().splitlines() if line.strip())
    return {item["custom_id"] for item in lines if item["body"].get("logprobs")}


async def _finish(client: LLMClient, state_path: epath.Path, poll_interval_s: float) -> dict[str, int]:
    """Poll one submitted batch to its end and merge its results; returns counts."""
    state = json.loads(state_path.read_text())
    with_logprobs = _asked_logprobs(state_path.with_suffix(".input.jsonl"))
    errors = client.batch_queue.errors
    while True:
        batch = await client.openai.batches.retrieve(state["batch_id"])
        if batch.status in TERMINAL:
            break
        log.info("batch %s: %s %s", batch.id, batch.status, batch.request_counts)
        await asyncio.sleep(poll_interval_s)
    answered, failed = 0, 0
    seen: set[str] = set()
    for item in await _download(client, batch.output_file_id) + await _download(client, batch.error_file_id):
        key = item.get("custom_id", "")
        seen.add(key)
        response = item.get("response") or {}
        if response.get("status_code") == 200:
            try:
                entry = entry_from_completion(response.get("body") or {}, logprobs=key in with_logprobs, batch=True)
                client.record_answer(key, entry)
                answered += 1
                continue
            except Exception as error:  # a malformed answer is a failure of that request only
                reason = f"malformed_response: {shorten(str(error))}"
        else:
            error = (response.get("body") or {}).get("error") or item.get("error") or {}
            status = response.get("status_code")
            reason = f"batch: HTTP {status}: {shorten(error.get('message', 'no message'))}"
        errors[key] = client.scrub(reason)
        failed += 1
    for key in state["keys"]:
        if key not in seen:
            detail = shorten(str(batch.errors)) if batch.errors else "no result in the output file"
            errors[key] = client.scrub(f"batch: {batch.status}: {detail}")
            failed += 1
    state["merged"] = True
    state["status"] = batch.status
    write_atomic(state_path, json.dumps(state, indent=1))
    if client.cache is not None:
        client.cache.sync()
    log.info("batch %s %s: %d answered, %d failed", batch.id, batch.status, answered, failed)
    return {"answered": answered, "failed": failed}


async def run_batch(
    client: LLMClient,
    work_dir: str | os.PathLike[str],
    *,
    poll_interval_s: float = 30.0,
    completion_window: str = "24h",
    max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH,
    max_bytes_per_batch: int = MAX_BYTES_PER_BATCH,
) -> dict[str, int]:
    """Send the requests queued in ``client.batch_queue`` through the Batch API and merge the answers
    into the cache.

    Batches submitted by an earlier (killed) run are finished first. Returns counts of requests
    submitted, answered and failed; failed keys land in ``client.batch_queue.errors`` with their reasons.
    """
    if client.cache is None:
        raise ValueError("the Batch API path needs a cache: results are merged into it")
    work = to_path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    totals = {"submitted": 0, "answered": 0, "failed": 0}
    unfinished = [p for p in sorted(work.glob("batch-*.json")) if not json.loads(p.read_text()).get("merged")]
    queue = client.batch_queue
    pending = queue.take()
    for state_path in unfinished:  # paid for already: finish before deciding what is still missing
        for name, count in (await _finish(client, state_path, poll_interval_s)).items():
            totals[name] += count
    pending = {k: v for k, v in pending.items() if k not in client.cache and k not in queue.errors}
    states = [
        await _submit(client, work, chunk, completion_window)
        for chunk in _chunks(pending, max_requests_per_batch, max_bytes_per_batch)
    ]
    totals["submitted"] = len(pending)
    for state_path in states:
        for name, count in (await _finish(client, state_path, poll_interval_s)).items():
            totals[name] += count
    return totals
