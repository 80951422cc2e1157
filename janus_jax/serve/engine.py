"""One worker thread that runs every request through a fixed set of decode slots (continuous batching).

Between chunks of decode steps the worker answers finished rows, frees their slots, and prefills the
queued requests that fit into the free slots; the other rows keep decoding. So a short request that
arrives while long ones decode is answered after a few steps, not after the longest reply of a wave.
Rows are reported after every chunk, so streaming clients see tokens as they come.

The HTTP side talks to the engine through `submit` (a Job whose `notify` receives
("partial" | "done", [Completion]) or ("error", APIError)) and `cancel` (the client went away: its
slots are freed at the next chunk boundary).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from janus_jax.sample import Completion, Sampler, SamplingParams, cut_at_stop_string, row_params
from janus_jax.serve import DEFAULT_CHUNK_TOKENS, DEFAULT_MAX_BATCH
from janus_jax.serve.protocol import APIError, GenerationRequest
from janus_jax.serve.slots import Drawn, Slots

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Job:
    """A request in flight; `notify` is called from the engine thread."""

    request: GenerationRequest
    rows: list[tuple[list[int], SamplingParams]]
    notify: Callable[[tuple[str, Any]], None]
    answered: bool = False
    cancelled: bool = False


@dataclasses.dataclass(eq=False)
class _Row:
    """One choice of a job on the host: what its slot has drawn so far."""

    job: Job
    choice: int
    prompt: list[int]
    params: SamplingParams
    slot: int = -1
    drawn: int = 0  # tokens drawn on the device, a final stop token included
    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    top: list[list[tuple[int, float]]] | None = None
    finish_reason: str | None = None
    text: str | None = None  # set when a stop string cut the reply

    def completion(self, tokenizer: Any) -> Completion:
        text = self.text
        if text is None:
            text = tokenizer.decode(self.token_ids) if tokenizer is not None else ""
        top = None if self.top is None else self.top[: len(self.token_ids)]
        return Completion(
            list(self.token_ids), text, list(self.logprobs), self.finish_reason, len(self.prompt), top_logprobs=top
        )


@dataclasses.dataclass
class EngineStats:
    chunks: int = 0  # decode calls
    admissions: int = 0  # prefill calls
    rows: int = 0  # rows admitted
    generated_tokens: int = 0
    busy_s: float = 0.0
    largest_batch: int = 0  # most rows decoding together
    admitted_while_busy: int = 0  # rows that joined a batch that was already decoding


class Engine:
    def __init__(
        self,
        sampler: Sampler,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH,
        max_queued_rows: int = 1024,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        gather_s: float = 0.002,
    ):
        self.sampler = sampler
        self.slots = Slots(sampler, max_batch_rows)
        self.max_batch_rows = max_batch_rows
        self.max_queued_rows = max_queued_rows
        self.chunk_tokens = chunk_tokens
        self.gather_s = gather_s
        self.stats = EngineStats()
        self._queue: list[Job] = []
        self._active: dict[int, _Row] = {}  # slot -> row
        self._release: set[int] = set()  # slots to free before the next decode call
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="janus-engine", daemon=True)
        self._thread.start()

    # -- the HTTP side --
    def submit(self, request: GenerationRequest, notify: Callable[[tuple[str, Any]], None]) -> Job:
        rows = request.rows()
        if len(rows) > self.max_batch_rows:
            raise APIError(400, f"{len(rows)} choices exceed this server's batch of {self.max_batch_rows}", param="n")
        for i, (prompt, params) in enumerate(rows):
            try:
                self.sampler.check_request(prompt, params, i)
            except ValueError as e:
                raise APIError(400, str(e)) from None
        job = Job(request, rows, notify)
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

    def cancel(self, job: Job) -> None:
        """The client is gone: drop the job if queued, free its slots if decoding."""
        with self._lock:
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
            self._lock.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=60)

    @property
    def busy_rows(self) -> int:
        return len(self._active)

    # -- the worker --
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._active and not self._closed:
                    self._lock.wait()
                if self._closed:
                    self._fail_all(APIError(503, "the server is shutting down", kind="server_error"))
                    return
                idle = not self._active
            if idle:
                self.slots.drain()
                self._release.clear()
                time.sleep(self.gather_s)  # let requests sent together be prefilled together
            start = time.perf_counter()
            try:
                self._admit()
                if self._active:
                    self._decode()
            except Exception as e:  # a failed step answers its requests and the server keeps serving
                log.exception("generation failed with %d rows decoding", len(self._active))
                self._fail_all(APIError(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error"))
                self.slots.drain()
            self.stats.busy_s += time.perf_counter() - start

    def _fail_all(self, error: APIError) -> None:
        with self._lock:
            jobs = {row.job for row in self._active.values()} | set(self._queue)
            self._queue.clear()
            self._active.clear()
            self._release.clear()
        for job in jobs:
            if not job.answered:
                job.answered = True
                job.notify(("error", error))

    def _take_jobs(self) -> list[Job]:
        """Queued jobs, first come first served, whose rows fit into the free slots."""
        with self._lock:
            for row in self._active.values():
                if row.job.cancelled and row.finish_reason is None:
                    row.finish_reason = "cancelled"
                    self._release.add(row.slot)
            for slot in [s for s, row in self._active.items() if row.job.cancelled]:
                del self._active[slot]
            free = self.slots.batch - len(set(self._active) | self._release)
            jobs = []
            while self._queue and len(self._queue[0].rows) <= free:
                job = self._queue.pop(0)
                jobs.append(job)
                free -= len(job.rows)
            return jobs

    def _admit(self) -> None:
        jobs = self._take_jobs()
        if not jobs:
            return
        taken = set(self._active) | self._release
        free = [s for s in range(self.slots.batch) if s not in taken]
        rows = [_Row(job, c, prompt, params) for job in jobs for c, (prompt, params) in enumerate(job.rows)]
        for row, slot in zip(rows, free, strict=False):
            row.slot = slot
            if row.job.request.top_logprobs:
                row.top = []
        need = max(self.slots.needed_cache_length(len(r.prompt), r.params.max_new_tokens) for r in rows)
        if self._active:
            self.stats.admitted_while_busy += len(rows)
        for row in rows:
            self._active[row.slot] = row
        jobs: dict[int, Job] = {}
        size = self.slots.prefill_rows
        for start in range(0, len(rows), size):
            group = rows[start : start + size]
            params = row_params([r.params for r in group], self.sampler.eos_id, self.sampler.stop_slots)
            want_logprobs = np.array([r.job.request.logprobs for r in group])
            want_top = np.array([r.top is not None for r in group])
            slots, prompts = [r.slot for r in group], [r.prompt for r in group]
            drawn = self.slots.admit(slots, prompts, params, want_logprobs, want_top, need)
            self.stats.admissions += 1
            jobs.update(self._collect(drawn, group))
        self.stats.rows += len(rows)
        self._report(jobs.values())

    def _decode(self) -> None:
        """One chunk of decode steps for the active rows."""
        release = np.zeros((self.slots.batch,), bool)
        release[list(self._release)] = True
        occupied = sorted(set(self._active) | self._release)
        self._release.clear()
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._active))
        drawn = self.slots.decode(release, self.chunk_tokens, occupied)
        self.stats.chunks += 1
        self._report(self._collect(drawn, list(self._active.values())).values())

    def _collect(self, drawn: Drawn, rows: list[_Row]) -> dict[int, Job]:
        """Append what the device drew to each row; return the jobs concerned."""
        wants_top = any(r.top is not None for r in rows)
        fields = [drawn.slots, drawn.tokens, drawn.logprobs, drawn.generated, drawn.done, drawn.hit_stop]
        if wants_top:
            fields += [drawn.top_ids, drawn.top_logprobs]
        host = jax.device_get(fields)  # one transfer for all of them
        slots, tokens, logprobs, generated, done, hit_stop = host[:6]
        index = {int(slot): i for i, slot in enumerate(slots)}
        jobs: dict[int, Job] = {}
        for row in rows:
            if row.finish_reason is not None:  # cut by a stop string, waiting for its job's other choices
                continue
            i = index[row.slot]
            count = int(generated[i]) - row.drawn
            row.drawn += count
            row.token_ids += tokens[i, :count].tolist()
            row.logprobs += logprobs[i, :count].tolist()
            if row.top is not None:
                ids, lps = host[6][i, :count], host[7][i, :count]
                row.top += [list(zip(a.tolist(), b.tolist(), strict=True)) for a, b in zip(ids, lps, strict=True)]
            self.stats.generated_tokens += count
            if done[i]:
                if hit_stop[i]:  # the stop token ends the reply but is not part of it
                    row.token_ids.pop()
                    row.logprobs.pop()
                row.finish_reason = "stop" if hit_stop[i] else "length"
            elif row.params.stop:
                search_from = max(1, len(row.token_ids) - count - 1)
                hit = cut_at_stop_string(self.sampler.tokenizer, row.token_ids, row.params.stop, search_from)
                if hit is not None:
                    cut, row.text = hit
                    del row.token_ids[cut:], row.logprobs[cut:]
                    row.finish_reason = "stop"
                    self._release.add(row.slot)
            jobs[id(row.job)] = row.job
        return jobs

    def _report(self, jobs: Any) -> None:
        """Answer the jobs whose rows all finished; send the others' progress to streaming clients."""
        by_job: dict[int, list[_Row]] = {}
        for row in self._active.values():
            by_job.setdefault(id(row.job), []).append(row)
        tok = self.sampler.tokenizer
        for job in jobs:
            rows = sorted(by_job.get(id(job), []), key=lambda r: r.choice)
            if job.answered or job.cancelled or not rows:
                continue
            if all(r.finish_reason is not None for r in rows):
                job.answered = True
                with self._lock:
                    for r in rows:  # a row cut by a stop string is still in self._release
                        self._active.pop(r.slot, None)
                job.notify(("done", [r.completion(tok) for r in rows]))
            elif job.request.stream:
                job.notify(("partial", [r.completion(tok) for r in rows]))
