"""Seeded percentile bootstrap over prompts (clusters), for every metric the reports show.

Items that share a prompt (Multifaceted Bench has three system messages per prompt; pairwise has two games
per item) are not independent, so whole prompts are resampled, never single rows.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_ROUNDS = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval; ``n`` is the number of rows it was computed on."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def cluster_indices(clusters: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Map cluster labels to dense ids 0..k-1 (in order of first appearance)."""
    ids: dict[Hashable, int] = {}
    dense = np.array([ids.setdefault(c, len(ids)) for c in clusters], dtype=np.int64)
    return dense, len(ids)


def resample_weights(n_clusters: int, rounds: int, seed: int) -> np.ndarray:
    """(rounds, n_clusters) multiplicities of each cluster in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clusters, size=(rounds, n_clusters))
    counts = np.zeros((rounds, n_clusters), dtype=np.int64)
    np.add.at(counts, (np.arange(rounds)[:, None], draws), 1)
    return counts


def bootstrap_mean(
    values: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
    scale: float = 1.0,
) -> Estimate:
    """Mean of ``values`` with a percentile interval from resampling whole clusters (default: each row)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    dense, k = cluster_indices(clusters if clusters is not None else range(len(x)))
    sums = np.bincount(dense, weights=x, minlength=k)
    counts = np.bincount(dense, minlength=k).astype(np.float64)
    w = resample_weights(k, rounds, seed)
    boot = (w @ sums) / (w @ counts)
    return _estimate(scale * x.mean(), scale * boot, level, x.size)


def _estimate(point: float, boot: np.ndarray, level: float, n: int) -> Estimate:
    alpha = (1.0 - level) / 2.0
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Estimate(float(point), float("nan"), float("nan"), n)
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return Estimate(float(point), float(low), float(high), n)
