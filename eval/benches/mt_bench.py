"""MT-Bench: two turns, FastChat's per-category temperatures, single-answer grading 1-10.

Math, reasoning and coding are graded against GPT-4 reference answers (FastChat's single-math-v1 prompts);
turn 2 is graded with the multi-turn prompt that shows the whole dialogue. The score is the mean over all
turn judgments, as FastChat's show_result reports it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from eval import DATA_DIR
from eval.benches.common import Benchmark, Item, JudgeParser, Loaded, RunSettings, judge_failures, limited
from eval.engine import JudgeJob
from eval.parsing import parse_rating
from eval.prompts import MT_BENCH_JUDGE_SAMPLING, fastchat_template_hash, mt_bench_messages
from eval.stats import bootstrap_mean
from janus_jax.jsonio import read_jsonl

KEY_FIELDS = ("id", "turn")
_JUDGES = ["single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"]


# FastChat's generation temperature per MT-Bench category (gen_model_answer.py).
MT_BENCH_TEMPERATURE = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
    "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0,
}
MT_BENCH_NEEDS_REFERENCE = ("math", "reasoning", "coding", "arena-hard-200")


def load_mt_bench() -> Loaded:
    """80 two-turn questions; math/reasoning/coding carry GPT-4 reference answers for the judge."""
    refs = {
        r["question_id"]: r["choices"][0]["turns"]
        for r in read_jsonl(DATA_DIR / "mt_bench" / "reference_answer_gpt-4.jsonl")
    }
    items, bad = [], []
    for row in read_jsonl(DATA_DIR / "mt_bench" / "question.jsonl"):
        qid = str(row["question_id"])
        reference = refs.get(row["question_id"], row.get("reference") or [])
        if row["category"] in MT_BENCH_NEEDS_REFERENCE and not reference:
            bad.append((qid, "reference answer missing for a reference-graded category"))
        items.append(Item(id=qid, turns=list(row["turns"]), category=row["category"], reference=list(reference)))
    return Loaded(items, bad)


def TEMPLATE_HASH() -> str:  # noqa: N802 - same interface as the other benchmark modules
    return fastchat_template_hash(_JUDGES)


def item_snapshots(items: list[Item]) -> list[dict[str, Any]]:
    return [{"id": it.id, "cluster": it.id, "category": it.category} for it in items]


def generation_options(item: Item, settings: RunSettings) -> dict[str, Any]:
    """FastChat's category temperature; Janus's top-p / repetition penalty / 1024 tokens otherwise."""
    options = settings.janus_sampling()
    options["temperature"] = MT_BENCH_TEMPERATURE.get(item.category, 0.7)
    return options


def judge_jobs(items: list[Item], answers: dict[str, list], settings: RunSettings) -> list[JudgeJob]:
    jobs = []
    for it in items:
        if it.id not in answers or len(answers[it.id]) < 2:
            continue
        needs_ref = it.category in MT_BENCH_NEEDS_REFERENCE and len(it.reference) >= 2
        for turn in (1, 2):
            name, messages = mt_bench_messages(it.turns, answers[it.id], it.reference, turn, needs_ref)
            jobs.append(JudgeJob({"id": it.id, "turn": turn}, messages, dict(MT_BENCH_JUDGE_SAMPLING), "rating",
                                 {"category": it.category, "judge_prompt": name}))
    return jobs


def aggregate(snapshots: list[dict], judgments: list[dict], settings: RunSettings,
              responses: dict | None = None) -> dict[str, Any]:
    meta = {s["id"]: s for s in snapshots}
    rows = [r for r in judgments if r.get("value") is not None and r["id"] in meta]

    def estimate(selected: list[dict]) -> dict:
        return bootstrap_mean([float(r["value"]) for r in selected], [r["id"] for r in selected], settings.rounds,
                              settings.seed, settings.level).to_dict()

    by_category: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_category[meta[r["id"]]["category"]].append(r)
    problems = judge_failures(judgments)
    return {
        "metric": "score (1-10)",
        "overall": estimate(rows),
        "by_turn": {f"turn {t}": estimate([r for r in rows if int(r["turn"]) == t]) for t in (1, 2)},
        "by_category": {c: estimate(v) for c, v in sorted(by_category.items())},
        "counts": {"items": len(snapshots), "judgments": len(rows),
                   "mean_turn_1": _mean([r for r in rows if int(r["turn"]) == 1]),
                   "mean_turn_2": _mean([r for r in rows if int(r["turn"]) == 2])},
        "problems": {k: v for k, v in problems.items() if v},
    }


def _mean(rows: list[dict]) -> float | None:
    return float(np.mean([float(r["value"]) for r in rows])) if rows else None


BENCHMARK = Benchmark(
    name="mt_bench",
    title="MT-Bench",
    load=lambda settings, limit: limited(load_mt_bench(), limit),
    key_fields=KEY_FIELDS,
    item_snapshots=item_snapshots,
    generation_options=generation_options,
    judge_jobs=judge_jobs,
    parsers={"rating": JudgeParser(parse_rating)},
    template_hash=lambda settings: TEMPLATE_HASH(),
    aggregate=aggregate,
    in_summary_plot=True,
)
