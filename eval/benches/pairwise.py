"""Pairwise judging of a model against a baseline on the same items, in both orders.

The judge sees the item's system message with the prompt (FastChat pair-v2 prompt). Game 1 shows the
model as A, game 2 shows the baseline as A. The two verdicts agree -> that outcome; they disagree -> a tie
(FastChat's rule). Reported: win, tie, loss and tie+win rates with intervals, and the judge's
position-consistency rate (share of items whose two verdicts agree).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from eval.benches.common import RunSettings, judge_failures
from eval.benchmarks import Item
from eval.engine import JudgeJob
from eval.prompts import PAIRWISE_JUDGE_SAMPLING, fastchat_template_hash, pairwise_messages
from eval.source_map import map_sources, normalize
from eval.stats import bootstrap_mean

KEY_FIELDS = ("id", "game")


def TEMPLATE_HASH() -> str:  # noqa: N802 - same interface as the other benchmark modules
    return fastchat_template_hash(["pair-v2"])


def item_snapshots(items: list[Item]) -> list[dict[str, Any]]:
    mapping = map_sources([(it.id, it.prompt, it.category) for it in items])
    return [{"id": it.id, "cluster": normalize(it.prompt), "subset": mapping.subset_of[it.id]} for it in items]


def generation_options(item: Item, settings: RunSettings) -> dict[str, Any]:
    return settings.janus_sampling()


def judge_jobs(items: list[Item], answers: dict[str, list], settings: RunSettings) -> list[JudgeJob]:
    jobs = []
    for it in items:
        if it.id not in answers or it.id not in settings.baseline:
            continue
        model, base = answers[it.id][0], settings.baseline[it.id]
        for game, (a, b) in enumerate(((model, base), (base, model)), start=1):
            jobs.append(JudgeJob({"id": it.id, "game": game}, pairwise_messages(it.system, it.prompt, a, b),
                                 dict(PAIRWISE_JUDGE_SAMPLING), "pairwise", {"model_is": "A" if game == 1 else "B"}))
    return jobs


def model_outcome(verdict: str, model_is: str) -> str:
    """'win' / 'tie' / 'loss' for the evaluated model from one game's verdict."""
    if verdict == "tie":
        return "tie"
    return "win" if verdict == model_is else "loss"


def combine(outcome_1: str, outcome_2: str) -> str:
    """Both games agree -> that outcome; otherwise a tie."""
    return outcome_1 if outcome_1 == outcome_2 else "tie"


def aggregate(snapshots: list[dict], judgments: list[dict], settings: RunSettings) -> dict[str, Any]:
    meta = {s["id"]: s for s in snapshots}
    games: dict[str, dict[int, str]] = defaultdict(dict)
    for row in judgments:
        if row.get("value") is not None and row["id"] in meta:
            games[row["id"]][int(row["game"])] = model_outcome(row["value"], row["model_is"])
    ids = [i for i in meta if len(games.get(i, {})) == 2]
    outcome = {i: combine(games[i][1], games[i][2]) for i in ids}
    clusters = [meta[i]["cluster"] for i in ids]

    def rate(pred) -> dict:
        return bootstrap_mean([1.0 if pred(i) else 0.0 for i in ids], clusters, settings.rounds, settings.seed,
                              settings.level, scale=100.0).to_dict()

    problems = judge_failures(judgments)
    problems["incomplete_pair"] = [i for i in meta if i not in outcome and i in games]
    return {
        "metric": "tie+win rate (%)",
        "baseline": settings.baseline_name,
        "overall": rate(lambda i: outcome[i] in ("win", "tie")),
        "rates": {
            "win": rate(lambda i: outcome[i] == "win"),
            "tie": rate(lambda i: outcome[i] == "tie"),
            "loss": rate(lambda i: outcome[i] == "loss"),
            "tie+win": rate(lambda i: outcome[i] in ("win", "tie")),
            "position_consistency": rate(lambda i: games[i][1] == games[i][2]),
        },
        "counts": {
            "items": len(snapshots), "judged_items": len(ids),
            "wins": sum(o == "win" for o in outcome.values()), "ties": sum(o == "tie" for o in outcome.values()),
            "losses": sum(o == "loss" for o in outcome.values()),
        },
        "problems": {k: v for k, v in problems.items() if v},
    }
