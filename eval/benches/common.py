"""What every benchmark module shares: the run settings and helpers for problem lists."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from eval.prompts import JANUS_REPETITION_PENALTY, JANUS_SAMPLING
from eval.stats import DEFAULT_LEVEL, DEFAULT_ROUNDS, DEFAULT_SEED


@dataclass
class RunSettings:
    """Settings that shape judge jobs and statistics; stored in run.json so rescore reproduces them."""

    runs: int = 3
    seed: int = DEFAULT_SEED
    rounds: int = DEFAULT_ROUNDS
    level: float = DEFAULT_LEVEL
    open_model: bool = False  # the evaluated model is served by vLLM / janus-serve (repetition penalty)
    lc_variant: str = "minimal"
    lc_assets: str | None = None
    baseline: dict[str, Any] = field(default_factory=dict)  # id -> baseline answer (pairwise)
    baseline_name: str = "baseline"
    arena_resample: str = "question"  # or "battle" (arena-hard v0.1's own bootstrap)

    def janus_sampling(self) -> dict[str, Any]:
        options = dict(JANUS_SAMPLING)
        if self.open_model:
            options["extra_body"] = {"repetition_penalty": JANUS_REPETITION_PENALTY}
        return options


def judge_failures(judgments: list[dict]) -> dict[str, list[str]]:
    """Ids of judge rows that failed, by kind (parse / api)."""
    out: dict[str, list[str]] = defaultdict(list)
    for row in judgments:
        if row.get("value") is None:
            out[f"judge_{row.get('error_kind') or 'parse'}_failure"].append(str(row["id"]))
    return {k: sorted(set(v), key=_id_order) for k, v in out.items()}


def _id_order(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def answers_of(responses: dict[str, dict]) -> dict[str, list]:
    """Successful answers by item id."""
    return {i: r["answers"] for i, r in responses.items() if r.get("error") is None and r.get("answers")}
