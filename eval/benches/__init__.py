"""The benchmark registry: one line per benchmark module of this package (see README, "Adding a benchmark").

Each module exports ``BENCHMARK``, an ``eval.benches.common.Benchmark``; the runner, the command line, the
report and the judging engine find every benchmark here and nowhere else.
"""

from __future__ import annotations

import importlib

from eval.benches.common import Benchmark

REGISTRY: list[str] = [
    "multifaceted",
    "pairwise",
    "mt_bench",
    "arena_hard",
    "alpaca_eval",
    "rtp",
]


def benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark by name, in registry order."""
    found = {}
    for module_name in REGISTRY:
        bench = importlib.import_module(f"{__name__}.{module_name}").BENCHMARK
        found[bench.name] = bench
    return found


def get_benchmark(name: str) -> Benchmark:
    registered = benchmarks()
    if name not in registered:
        raise ValueError(f"unknown benchmark {name!r}; registered: {', '.join(registered)}")
    return registered[name]
