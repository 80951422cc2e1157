"""One worker thread that batches concurrent requests into shared decode runs (per-wave batching).

Requests queue up while a wave runs; the next wave takes every queued request (up to
`max_batch_rows` choices) and decodes them together in one `Sampler.stream` call. Rows are reported
after every chunk of decode steps, so streaming clients see tokens as they come and a request whose
rows finished early is answered before the rest of its wave.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Any

from janus_jax.sample import Completion, Sampler
from janus_jax.serve.protocol import APIError, GenerationRequest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Job:
    """A request in flight. `events` receives ("partial" | "done", [Completion]) or ("error", APIError)."""

    request: GenerationRequest
    rows: list[tuple[list[int], Any]]
    events: queue.Queue = dataclasses.field(default_factory=queue.Queue)
    answered: bool = False


@dataclasses.dataclass
class EngineStats:
    waves: int = 0
    rows: int = 0
    generated_tokens: int = 0
    busy_s: float = 0.0
    largest_wave: int = 0


class Engine:
    def __init__(
        self,
        sampler: Sampler,
        *,
        max_batch_rows: int = 32,
        max_queued_rows: int = 1024,
        gather_s: float = 0.002,
        chunk_tokens: int = 16,
    ):
        self.sampler = sampler
        self.max_batch_rows = max_batch_rows
        self.max_queued_rows = max_queued_rows
        self.gather_s = gather_s
        self.chunk_tokens = chunk_tokens
        self.stats = EngineStats()
        self._queue: list[Job] = []
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="janus-engine", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> Job:
        rows = request.rows()
        if len(rows) > self.max_batch_rows:
            raise APIError(400, f"{len(rows)} choices exceed this server's batch of {self.max_batch_rows}", param="n")
        for i, (prompt, params) in enumerate(rows):
            try:
                self.sampler.check_request(prompt, params, i)
            except ValueError as e:
                raise APIError(400, str(e)) from None
        job = Job(request, rows)
        with self._lock:
            if self._closed:
                raise APIError(503, "the server is shutting down", kind="server_error")
            queued = sum(len(j.rows) for j in self._queue)
            if queued + len(rows) > self.max_queued_rows:
                raise APIError(
                    429,
                    f"the server is busy ({queued} choices queued); retry later",
                    kind="rate_limit_error",
                    code="server_busy",
                )
            self._queue.append(job)
            self._lock.notify()
        return job

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=60)

    def _next_wave(self) -> list[Job]:
        with self._lock:
            while not self._queue and not self._closed:
                self._lock.wait()
            if self._closed:
                for job in self._queue:
                    job.events.put(("error", APIError(503, "the server is shutting down", kind="server_error")))
                self._queue.clear()
                return []
        time.sleep(self.gather_s)  # let requests sent together arrive together
        with self._lock:
            wave, rows = [], 0
            while self._queue and rows + len(self._queue[0].rows) <= self.max_batch_rows:
                job = self._queue.pop(0)
                wave.append(job)
                rows += len(job.rows)
            return wave

    def _loop(self) -> None:
        while True:
            wave = self._next_wave()
            if not wave:
                return
            start = time.perf_counter()
            try:
                self._run(wave)
            except Exception as e:  # a failed wave answers its requests and the server keeps serving
                log.exception("generation failed for a wave of %d requests", len(wave))
                for job in wave:
                    if not job.answered:
                        job.events.put(
                            ("error", APIError(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error"))
                        )
            self.stats.busy_s += time.perf_counter() - start

    def _run(self, wave: list[Job]) -> None:
        prompts = [prompt for job in wave for prompt, _ in job.rows]
        params = [p for job in wave for _, p in job.rows]
        self.stats.waves += 1
        self.stats.rows += len(prompts)
        self.stats.largest_wave = max(self.stats.largest_wave, len(prompts))
        final: list[Completion] = []
        for snapshot in self.sampler.stream(prompts, params, chunk_tokens=self.chunk_tokens):
            final = snapshot
            at = 0
            for job in wave:
                rows = snapshot[at : at + len(job.rows)]
                at += len(job.rows)
                if job.answered:
                    continue
                if all(c.finish_reason is not None for c in rows):
                    job.answered = True
                    job.events.put(("done", rows))
                elif job.request.stream:
                    job.events.put(("partial", rows))
        self.stats.generated_tokens += sum(len(c.token_ids) for c in final)
