"""janus-serve under load: continuous batching vs per-wave batching, same model, same requests, one run.

64 clients (threads, each with its own HTTP connection) each send --requests-per-client chat requests
one after another, greedy, with reply lengths (max_tokens) drawn log-uniformly from
[--min-tokens, --max-tokens] (fixed seed), as replies of a chat workload vary in length. Both servers
are janus-serve (same uvicorn layer, same decode-slot count); the reference only swaps the engine for
the per-wave batching janus-serve used before (reproduced below: a wave takes every queued request and
decodes it with `Sampler.stream` until its longest reply is done). Each mode runs the workload once to
compile; then the timed runs alternate between the two servers (--rounds each, best counts), so that
other jobs' load hits both alike. The first client then runs its requests alone against both servers
(`one_client`): a lone user must not pay for the batching. Prints one JSON object: generated tokens/s of
each, their ratio, request latencies, and the load average before and after (a loaded machine shows as such).

The clients run in a process of their own, as a server's clients do: in the server's process their 64
threads would take the server's interpreter lock to build and parse every request, which slows the engine
thread between decode calls and bunches the requests that reach the per-wave engine. Each client builds its
HTTP client before the clock starts, and all start together.

    PYTHONPATH=. .venv/bin/python bench/serve_load.py
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import openai
from flax import nnx

from janus_jax.model import Mistral, MistralConfig
from janus_jax.sample import Completion, Sampler
from janus_jax.serve.build import build_server
from janus_jax.serve.engine import EngineStats, Job
from janus_jax.serve.loading import LoadedModel
from janus_jax.serve.protocol import APIError, GenerationRequest
from janus_jax.tokenizer import load_tokenizer


class WaveEngine:
    """The reference: per-wave batching. Requests queue while a wave runs; the next wave takes every
    queued request (up to `max_batch_rows` rows) and decodes them together until all are done."""

    def __init__(self, sampler: Sampler, max_batch_rows: int, chunk_tokens: int = 16, gather_s: float = 0.002):
        self.sampler, self.max_batch_rows = sampler, max_batch_rows
        self.chunk_tokens, self.gather_s = chunk_tokens, gather_s
        self.stats = EngineStats()
        self.waves = 0
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    busy_rows = 0

    def submit(self, request: GenerationRequest, notify: Any) -> Job:
        job = Job(request, request.rows(), notify)
        self._queue.put(job)
        return job

    def cancel(self, job: Job) -> None:
        job.cancelled = True

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _next_wave(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        time.sleep(self.gather_s)  # let requests sent together arrive together
        wave, rows = [first], len(first.rows)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return wave
            if job is None or rows + len(job.rows) > self.max_batch_rows:
                self._queue.put(job)  # back of the queue: next wave (order within a burst is arbitrary)
                return wave
            wave.append(job)
            rows += len(job.rows)

    def _loop(self) -> None:
        while (wave := self._next_wave()) is not None:
            try:
                self._run(wave)
            except Exception as e:
                for job in wave:
                    if not job.answered:
                        job.notify(("error", APIError(500, str(e), kind="server_error")))

    def _run(self, wave: list[Job]) -> None:
        prompts = [p for job in wave for p, _ in job.rows]
        params = [p for job in wave for _, p in job.rows]
        self.waves += 1
        final: list[Completion] = []
        for snapshot in self.sampler.stream(prompts, params, chunk_tokens=self.chunk_tokens):
            final, at = snapshot, 0
            for job in wave:
                rows = snapshot[at : at + len(job.rows)]
                at += len(job.rows)
                if not job.answered and all(c.finish_reason is not None for c in rows):
                    job.answered = True
                    job.notify(("done", rows))
        self.stats.generated_tokens += sum(len(c.token_ids) for c in final)


def run_workload(url: str, lengths: list[list[int]]) -> dict:
    """Every client sends its requests in turn; returns tokens/s and request latencies."""
    latencies: list[float] = []
    clients = [openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600) for _ in lengths]
    ready = threading.Barrier(len(lengths) + 1)

    def client_loop(c: int) -> int:
        tokens = 0
        ready.wait()
        for r, max_tokens in enumerate(lengths[c]):
            messages = [{"role": "user", "content": f"Client {c}, question {r}: tell me about the number {c * r}."}]
            start = time.perf_counter()
            reply = clients[c].chat.completions.create(
                model="bench",
                messages=messages,
                max_tokens=max_tokens,
                temperature=0.0,
                extra_body={"repetition_penalty": 1.0},
            )
            latencies.append(time.perf_counter() - start)
            tokens += reply.usage.completion_tokens
        return tokens

    with ThreadPoolExecutor(len(lengths)) as pool:
        counts = [pool.submit(client_loop, c) for c in range(len(lengths))]
        ready.wait()
        start = time.perf_counter()
        tokens = sum(count.result() for count in counts)
        wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return {
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(float(np.median(latencies)), 2),
        "latency_max_s": round(max(latencies), 2),
    }


def _client_process(jobs: Any, results: Any) -> None:
    """The clients' own process: runs each (url, lengths) it is sent, until it gets None."""
    while (job := jobs.get()) is not None:
        results.put(run_workload(*job))


class ClientProcess:
    """run_workload in a separate process, started once (spawned: it does not inherit the server's threads)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._jobs, self._results = context.Queue(), context.Queue()
        self._process = context.Process(target=_client_process, args=(self._jobs, self._results), daemon=True)
        self._process.start()

    def run(self, url: str, lengths: list[list[int]]) -> dict:
        self._jobs.put((url, lengths))
        while True:
            try:
                return self._results.get(timeout=5)
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(f"the client process died (exit code {self._process.exitcode})") from None

    def close(self) -> None:
        self._jobs.put(None)
        self._process.join(timeout=60)


def start_server(model: Mistral, tokenizer: Any, mode: str, slots: int) -> Any:
    loaded = LoadedModel(model, tokenizer, "bench")
    engine = None
    if mode == "per_wave":
        sampler = Sampler(model, tokenizer, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
        engine = WaveEngine(sampler, max_batch_rows=slots)
    server = build_server(loaded, port=0, max_batch=slots, max_tokens=4096, log_requests=False, engine=engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def best_runs(clients: ClientProcess, urls: dict[str, str], lengths: list[list[int]], rounds: int) -> dict:
    """One untimed run per server (it compiles every shape the timed runs need), then `rounds` timed runs
    alternating between the servers (other jobs' load hits both alike); the best run of each counts."""
    for url in urls.values():
        clients.run(url, lengths)
    runs: dict[str, list[dict]] = {mode: [] for mode in urls}
    for _ in range(rounds):
        for mode, url in urls.items():
            runs[mode].append(clients.run(url, lengths))
    return {mode: max(runs[mode], key=lambda r: r["tokens_per_s"]) for mode in urls}


def ratio(runs: dict) -> float:
    return round(runs["continuous"]["tokens_per_s"] / runs["per_wave"]["tokens_per_s"], 2)


def measure(model: Mistral, tokenizer: Any, lengths: list[list[int]], slots: int, rounds: int) -> dict:
    """Both servers up at once, under the whole workload and then under its first client alone (the lone
    user chatting, which continuous batching must not slow down)."""
    modes = ("continuous", "per_wave")
    servers = {mode: start_server(model, tokenizer, mode, slots) for mode in modes}
    urls = {mode: server.url for mode, server in servers.items()}
    clients = ClientProcess()
    try:
        result: dict[str, Any] = best_runs(clients, urls, lengths, rounds)
        result["ratio_tokens_per_s"] = ratio(result)
        one_client = best_runs(clients, urls, lengths[:1], rounds)
        result["one_client"] = {**one_client, "ratio_tokens_per_s": ratio(one_client)}
        result["continuous_engine"] = {"chunk_tokens": servers["continuous"].engine.chunk_tokens}
        return result
    finally:
        clients.close()
        for server in servers.values():
            server.shutdown()
            server.engine.close()
            server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=8)
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--slots", type=int, default=64, help="decode slots (and the per-wave batch limit)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each mode, alternating; best counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = MistralConfig.tiny(max_position_embeddings=1024)
    model = Mistral(config, rngs=nnx.Rngs(0))
    tokenizer = load_tokenizer()
    rng = np.random.default_rng(0)
    log_range = np.log([args.min_tokens, args.max_tokens])
    lengths = np.exp(rng.uniform(*log_range, size=(args.clients, args.requests_per_client))).astype(int).tolist()

    result: dict[str, Any] = {
        "model_params": config.num_params,
        "clients": args.clients,
        "requests": args.clients * args.requests_per_client,
        "max_tokens_range": [args.min_tokens, args.max_tokens],
        "slots": args.slots,
        "rounds": args.rounds,
        "jax_backend": jax.default_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    result.update(measure(model, tokenizer, lengths, args.slots, args.rounds))
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
