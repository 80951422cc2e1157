"""Arena-Hard-Auto v0.1: pairwise against gpt-4-0314's shipped answers, both orders, Bradley-Terry.

Game 1 shows the baseline as A (arena-hard's order), game 2 the model. ``>>`` verdicts count three times;
the score is the model's Bradley-Terry win probability against the baseline with a bootstrap interval
over questions (``--arena-resample battle`` gives arena-hard's own battle-row bootstrap).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from eval import DATA_DIR
from eval.benches.common import Benchmark, Item, JudgeParser, Loaded, Option, RunSettings, judge_failures, limited
from eval.bradley_terry import arena_scores, battles_from_games
from eval.engine import JudgeJob
from eval.parsing import parse_arena
from eval.prompts import ARENA_GENERATION, ARENA_JUDGE_SAMPLING, arena_messages, arena_template_hash
from janus_jax.jsonio import read_jsonl

KEY_FIELDS = ("id", "game")
TEMPLATE_HASH = arena_template_hash
BASELINE = "gpt-4-0314"
RESAMPLE = Option("arena-resample", "question", "bootstrap unit: whole questions, or arena-hard's own battle rows",
                  choices=("question", "battle"))


def load_arena_hard() -> Loaded:
    """500 Arena-Hard-Auto v0.1 questions; ``meta['baseline']`` is gpt-4-0314's answer."""
    baseline = {
        r["question_id"]: r["choices"][0]["turns"][0]["content"]
        for r in read_jsonl(DATA_DIR / "arena_hard_v0.1" / "gpt-4-0314.jsonl")
    }
    items, bad = [], []
    for row in read_jsonl(DATA_DIR / "arena_hard_v0.1" / "question.jsonl"):
        qid = row["question_id"]
        if qid not in baseline:
            bad.append((qid, "no gpt-4-0314 baseline answer"))
            continue
        items.append(
            Item(id=qid, turns=[row["turns"][0]["content"]], category=row.get("cluster", ""),
                 meta={"baseline": baseline[qid], "baseline_name": "gpt-4-0314"})
        )
    return Loaded(items, bad)


def item_snapshots(items: list[Item]) -> list[dict[str, Any]]:
    return [{"id": it.id, "cluster": it.id, "category": it.category} for it in items]


def generation_options(item: Item, settings: RunSettings) -> dict[str, Any]:
    """arena-hard's answer generation: greedy, up to 4096 tokens."""
    options = settings.janus_sampling()
    options.update(ARENA_GENERATION)
    options.pop("top_p", None)
    return options


def judge_jobs(items: list[Item], answers: dict[str, list], settings: RunSettings) -> list[JudgeJob]:
    jobs = []
    for it in items:
        if it.id not in answers:
            continue
        model, base = answers[it.id][0], it.meta["baseline"]
        for game, (a, b) in enumerate(((base, model), (model, base)), start=1):
            jobs.append(JudgeJob({"id": it.id, "game": game}, arena_messages(it.prompt, a, b),
                                 dict(ARENA_JUDGE_SAMPLING), "arena"))
    return jobs


def aggregate(snapshots: list[dict], judgments: list[dict], settings: RunSettings,
              responses: dict | None = None) -> dict[str, Any]:
    meta = {s["id"]: s for s in snapshots}
    verdicts: dict[str, dict[int, str | None]] = defaultdict(dict)
    for row in judgments:
        if row["id"] in meta:
            verdicts[row["id"]][int(row["game"])] = row.get("value")
    games = [(qid, "model", BASELINE, v.get(1), v.get(2)) for qid, v in verdicts.items()]
    battles = battles_from_games(games, BASELINE)
    problems = judge_failures(judgments)
    if len(battles.a) == 0:
        return {"metric": "score vs gpt-4-0314 (%)", "overall": None, "counts": {"items": len(snapshots)},
                "problems": problems}
    scores = arena_scores(battles, settings.rounds, settings.seed, settings.level,
                          resample=settings.get(RESAMPLE))
    tally: dict[str, int] = defaultdict(int)
    for v in verdicts.values():
        for game, verdict in v.items():
            if verdict is not None:
                # Express every verdict from the model's side: in game 1 the model is B.
                tally[_model_side(verdict, model_is_a=(game == 2))] += 1
    return {
        "metric": "score vs gpt-4-0314 (%)",
        "overall": scores["model"].to_dict(),
        "counts": {"items": len(snapshots), "judged_questions": len(verdicts), "battles": int(battles.weight.sum()),
                   "verdicts_from_model_side": dict(sorted(tally.items()))},
        "problems": {k: v for k, v in problems.items() if v},
    }


def _model_side(verdict: str, model_is_a: bool) -> str:
    if model_is_a:
        return verdict.replace("A", "M").replace("B", "O")
    return verdict.replace("B", "M").replace("A", "O")


BENCHMARK = Benchmark(
    name="arena_hard",
    title="Arena-Hard v0.1",
    load=lambda settings, limit: limited(load_arena_hard(), limit),
    key_fields=KEY_FIELDS,
    item_snapshots=item_snapshots,
    generation_options=generation_options,
    judge_jobs=judge_jobs,
    parsers={"arena": JudgeParser(parse_arena)},
    template_hash=lambda settings: arena_template_hash(),
    aggregate=aggregate,
    options=(RESAMPLE,),
    digits=1,
    in_summary_plot=True,
)
