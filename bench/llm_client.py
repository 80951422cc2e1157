"""Throughput of the LLM client against a local server that answers every call after a fixed latency.

With latency L and concurrency C the ideal is C / L calls per second (64 / 0.2 s = 320 calls/s); the
client should reach at least 90% of it with its cache, limits and accounting switched on. The same
calls through a bare ``openai.AsyncOpenAI`` under a semaphore are the reference, measured in the same run.

    .venv/bin/python bench/llm_client.py [--calls 1280] [--concurrency 64] [--latency-s 0.2]

Prints one JSON object (calls_per_s, ideal_calls_per_s, efficiency, reference_calls_per_s, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from janus_jax.llm import ChatRequest, LLMClient

SERVER = Path(__file__).resolve().parent.parent / "tests" / "scripted_openai_server.py"


def start_server(latency_s: float) -> tuple[subprocess.Popen[str], str]:
    """The scripted server in its own process, so it does not compete with the client for the GIL."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--latency-s", str(latency_s)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"the scripted server did not start (said {line!r})")
    return proc, f"http://127.0.0.1:{line[1]}/v1"


def requests(n: int, tag: str) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": f"{tag} request {i}"}], {"max_tokens": 16}) for i in range(n)]


async def bench_client(base_url: str, calls: int, concurrency: int, cache_dir: str) -> tuple[float, dict]:
    client = LLMClient("scripted", base_url, max_concurrency=concurrency, cache_path=f"{cache_dir}/cache.jsonl")
    await client.chat_many(requests(concurrency, "warmup"), progress=False)  # open the connections
    start = time.perf_counter()
    results = await client.chat_many(requests(calls, "timed"), progress=False)
    wall = time.perf_counter() - start
    await client.aclose()
    client.close()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return wall, client.stats.as_dict()


async def bench_reference(base_url: str, calls: int, concurrency: int) -> float:
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int, tag: str) -> None:
        async with semaphore:
            await sdk.chat.completions.create(
                model="scripted", max_tokens=16, messages=[{"role": "user", "content": f"{tag} {i}"}]
            )

    await asyncio.gather(*(one(i, "warmup") for i in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(one(i, "timed") for i in range(calls)))
    wall = time.perf_counter() - start
    await sdk.close()
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1280)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-s", type=float, default=0.2)
    args = parser.parse_args()
    proc, base_url = start_server(args.latency_s)
    try:
        with tempfile.TemporaryDirectory() as cache_dir:
            wall, stats = asyncio.run(bench_client(base_url, args.calls, args.concurrency, cache_dir))
        reference_wall = asyncio.run(bench_reference(base_url, args.calls, args.concurrency))
    finally:
        proc.kill()
        proc.wait()
    ideal = args.concurrency / args.latency_s
    calls_per_s = args.calls / wall
    print(
        json.dumps(
            {
                "benchmark": "llm_client_throughput",
                "calls": args.calls,
                "concurrency": args.concurrency,
                "latency_s": args.latency_s,
                "wall_s": round(wall, 3),
                "calls_per_s": round(calls_per_s, 1),
                "ideal_calls_per_s": round(ideal, 1),
                "efficiency": round(calls_per_s / ideal, 3),
                "target_efficiency": 0.9,
                "meets_target": calls_per_s >= 0.9 * ideal,
                "reference_calls_per_s": round(args.calls / reference_wall, 1),
                "reference": "bare openai.AsyncOpenAI under a semaphore, same server, same run",
                "client_stats": stats,
            }
        )
    )


if __name__ == "__main__":
    main()
