"""AlpacaEval 2.0: win rate and length-controlled win rate against gpt4_1106_preview's outputs.

The judge gets AlpacaEval's classifier prompt with the two outputs in a seeded random order per item and
answers "m" (output 1) or "M" (output 2); the order is undone before scoring. Preferences follow
AlpacaEval (1 = baseline, 2 = model), so ``eval.alpaca_lc`` computes both win rates as AlpacaEval does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from eval.alpaca_lc import LcAssets, length_controlled_winrate
from eval.benches.common import RunSettings, judge_failures
from eval.benchmarks import Item
from eval.engine import JudgeJob
from eval.prompts import ALPACA_JUDGE_SAMPLING, alpaca_messages, alpaca_template_hash

KEY_FIELDS = ("id",)
TEMPLATE_HASH = alpaca_template_hash


def item_snapshots(items: list[Item]) -> list[dict[str, Any]]:
    return [{"id": it.id, "cluster": it.id, "index": int(it.id), "baseline_len": len(it.meta["baseline"])}
            for it in items]


def generation_options(item: Item, settings: RunSettings) -> dict[str, Any]:
    return settings.janus_sampling()


def is_switched(item_id: str, seed: int) -> bool:
    """Seeded per-item coin: show the model's output first?"""
    return hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[0] % 2 == 1


def judge_jobs(items: list[Item], answers: dict[str, list], settings: RunSettings) -> list[JudgeJob]:
    jobs = []
    for it in items:
        if it.id not in answers:
            continue
        model, base = answers[it.id][0], it.meta["baseline"]
        switched = is_switched(it.id, settings.seed)
        first, second = (model, base) if switched else (base, model)
        jobs.append(JudgeJob({"id": it.id}, alpaca_messages(it.prompt, first, second), dict(ALPACA_JUDGE_SAMPLING),
                             "alpaca", {"switched": switched, "model_len": len(model)}))
    return jobs


def aggregate(snapshots: list[dict], judgments: list[dict], settings: RunSettings) -> dict[str, Any]:
    meta = {s["id"]: s for s in snapshots}
    rows = [r for r in judgments if r.get("value") is not None and r["id"] in meta]
    problems = judge_failures(judgments)
    if len(rows) < 2:
        return {"metric": "win rate (%)", "overall": None, "counts": {"items": len(snapshots)}, "problems": problems}
    # value 1 = the first shown output won; undo the order so 1 = baseline, 2 = model.
    prefs = [float(3 - r["value"]) if r["switched"] else float(r["value"]) for r in rows]
    assets = LcAssets.from_dir(settings.lc_assets) if settings.lc_assets else None
    metrics = length_controlled_winrate(
        prefs, [meta[r["id"]]["baseline_len"] for r in rows], [r["model_len"] for r in rows],
        [meta[r["id"]]["index"] for r in rows], variant=settings.lc_variant, assets=assets,
    )
    lc, lc_se = metrics["length_controlled_winrate"], metrics["lc_standard_error"]
    wr, se = metrics["win_rate"], metrics["standard_error"]
    n = metrics["n_total"]
    return {
        "metric": "win rate (%)",
        "overall": {"value": lc, "low": lc - 1.96 * lc_se, "high": lc + 1.96 * lc_se, "n": n},
        "rates": {
            "length-controlled win rate": {"value": lc, "low": lc - 1.96 * lc_se, "high": lc + 1.96 * lc_se, "n": n},
            "win rate": {"value": wr, "low": wr - 1.96 * se, "high": wr + 1.96 * se, "n": n},
        },
        "counts": {k: metrics[k] for k in ("n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate",
                                           "lc_variant", "lc_weights", "lc_extreme_change")},
        "problems": {k: v for k, v in problems.items() if v},
    }
