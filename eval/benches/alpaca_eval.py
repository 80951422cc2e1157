"""AlpacaEval 2.0: win rate and length-controlled win rate against gpt4_1106_preview's outputs.

The judge gets AlpacaEval's classifier prompt with the two outputs in a seeded random order per item and
answers "m" (output 1) or "M" (output 2); the order is undone before scoring. Preferences follow
AlpacaEval (1 = baseline, 2 = model), so ``eval.alpaca_lc`` computes both win rates as AlpacaEval does.

Annotation: when the judge returns the first token's top log-probabilities, the preference is the
leaderboard annotator's (``weighted_alpaca_eval_gpt4_turbo``): P(output 1) = p(m) / (p(m) + p(M)),
preference = 2 - P(output 1). Without them it is the sampled letter (1 or 2). The LC GLM is ``v1`` (the
leaderboard's) whenever AlpacaEval's ``df_gamed.csv`` is at hand (``--lc-assets DIR``, ``--lc-assets hub``,
or an earlier hub download in the Hugging Face cache), else ``minimal``. The report names both.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from eval import DATA_DIR
from eval.alpaca_lc import LcAssets, length_controlled_winrate, locate_assets
from eval.benches.common import Benchmark, Item, JudgeParser, Loaded, Option, RunSettings, judge_failures, limited
from eval.engine import JudgeJob
from eval.parsing import alpaca_preference_from_logprobs, parse_alpaca_choice
from eval.prompts import ALPACA_JUDGE_SAMPLING, alpaca_messages, alpaca_template_hash

KEY_FIELDS = ("id",)
TEMPLATE_HASH = alpaca_template_hash
LC_VARIANT = Option("lc-variant", "auto", "AlpacaEval length-controlled GLM; auto: v1 when AlpacaEval's df_gamed.csv "
                    "is at hand, else minimal", choices=("auto", "minimal", "noreg", "v1"))
LC_ASSETS = Option("lc-assets", None, "directory with AlpacaEval's instruction_difficulty.csv and/or df_gamed.csv, "
                   "or 'hub' to download df_gamed.csv once (default: the Hugging Face cache, if it has it)",
                   metavar="DIR|hub")
ANNOTATOR = Option("annotator", "weighted", "weighted: the leaderboard's annotator, from the judge's top "
                   "log-probabilities of m/M; discrete: the judge's sampled letter, for judges without log-probs",
                   choices=("weighted", "discrete"))
TOP_LOGPROBS = 5  # weighted_alpaca_eval_gpt4_turbo's configs.yaml: one token, top-5 log-probabilities
ANNOTATORS = {
    "weighted": "weighted_alpaca_eval_gpt4_turbo (preference from the judge's log-probabilities of m/M)",
    "discrete": "discrete m/M (the judge returned no log-probabilities; AlpacaEval's *_fn-style annotation)",
}


def judge_sampling(settings: RunSettings) -> dict[str, Any]:
    """The judge's sampling; the weighted annotator asks for the first token's top log-probabilities."""
    if settings.get(ANNOTATOR) == "discrete":
        return dict(ALPACA_JUDGE_SAMPLING)
    return {**ALPACA_JUDGE_SAMPLING, "logprobs": True, "top_logprobs": TOP_LOGPROBS}


def lc_setup(settings: RunSettings) -> tuple[str, LcAssets | None, str | None]:
    """(LC variant, assets, where the assets came from) for this run's settings."""
    assets, origin = locate_assets(settings.get(LC_ASSETS))
    variant = settings.get(LC_VARIANT)
    if variant == "auto":
        variant = "v1" if assets is not None and assets.gamed is not None else "minimal"
    return variant, assets, origin


def load_alpaca_eval() -> Loaded:
    """The 805 AlpacaEval 2.0 instructions; ``meta['baseline']`` is gpt4_1106_preview's output."""
    rows = json.loads((DATA_DIR / "alpaca_eval" / "gpt4_1106_preview_outputs.json").read_text())
    items = [
        Item(id=str(i), turns=[r["instruction"]], category=r.get("dataset", ""),
             meta={"baseline": r["output"], "baseline_name": r["generator"]})
        for i, r in enumerate(rows)
    ]
    return Loaded(items)


def alpaca_instructions() -> list[str]:
    return [item.prompt for item in load_alpaca_eval().items]


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
        jobs.append(JudgeJob({"id": it.id}, alpaca_messages(it.prompt, first, second), judge_sampling(settings),
                             "alpaca", {"switched": switched, "model_len": len(model)}))
    return jobs


def aggregate(snapshots: list[dict], judgments: list[dict], settings: RunSettings,
              responses: dict | None = None) -> dict[str, Any]:
    meta = {s["id"]: s for s in snapshots}
    rows = [r for r in judgments if r.get("value") is not None and r["id"] in meta]
    problems = judge_failures(judgments)
    if len(rows) < 2:
        return {"metric": "win rate (%)", "overall": None, "counts": {"items": len(snapshots)}, "problems": problems}
    # value 1 = the first shown output won (a float in [1, 2] when weighted); undo the order so 1 = baseline.
    prefs = [float(3 - r["value"]) if r["switched"] else float(r["value"]) for r in rows]
    variant, assets, origin = lc_setup(settings)
    metrics = length_controlled_winrate(
        prefs, [meta[r["id"]]["baseline_len"] for r in rows], [r["model_len"] for r in rows],
        [meta[r["id"]]["index"] for r in rows], variant=variant, assets=assets,
    )
    annotations = Counter(r.get("annotation", "discrete") for r in rows)
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
        "annotator": {kind: {"judgments": n, "annotator": ANNOTATORS[kind]} for kind, n in annotations.items()},
        "lc_variant": variant,
        "lc_assets": origin,
        "counts": {k: metrics[k] for k in ("n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate",
                                           "lc_variant", "lc_weights", "lc_extreme_change")},
        "problems": {k: v for k, v in problems.items() if v},
    }


def report_lines(scores: dict) -> list[str]:
    """Which annotator and which LC GLM produced the number: the leaderboard's are weighted and v1."""
    lines = ["AlpacaEval intervals are +-1.96 standard errors, as AlpacaEval reports them."]
    for info in (scores.get("annotator") or {}).values():
        lines.append(f"Annotator: {info['annotator']}, {info['judgments']} judgments.")
    if scores.get("lc_variant"):
        source = f" (AlpacaEval assets: {scores['lc_assets']})" if scores.get("lc_assets") else \
            " (AlpacaEval's df_gamed.csv not at hand: the leaderboard uses v1)"
        lines.append(f"LC variant: {scores['lc_variant']}{source}.")
    return lines


BENCHMARK = Benchmark(
    name="alpaca_eval",
    title="AlpacaEval 2.0 LC",
    load=lambda settings, limit: limited(load_alpaca_eval(), limit),
    key_fields=KEY_FIELDS,
    item_snapshots=item_snapshots,
    generation_options=generation_options,
    judge_jobs=judge_jobs,
    parsers={"alpaca": JudgeParser(parse_alpaca_choice, from_logprobs=alpaca_preference_from_logprobs)},
    template_hash=lambda settings: alpaca_template_hash(),
    aggregate=aggregate,
    options=(ANNOTATOR, LC_VARIANT, LC_ASSETS),
    digits=1,
    report_lines=report_lines,
    in_summary_plot=True,
)
