"""Judged benchmarks, statistics and reports: Multifaceted Bench, pairwise, AlpacaEval 2.0, MT-Bench,
Arena-Hard-Auto v0.1 and RealToxicityPrompts, each one module in ``eval/benches/``.
Command line: ``python -m eval --help``."""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"  # shipped benchmark files; licenses in data/SOURCES.md
