"""Judged benchmarks, statistics and reports: Multifaceted Bench, pairwise, AlpacaEval 2.0, MT-Bench,
Arena-Hard-Auto v0.1 and RealToxicityPrompts. Command line: ``python -m eval --help``."""
