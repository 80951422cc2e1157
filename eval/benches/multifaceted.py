"""Multifaceted Bench, absolute grading exactly as the Janus paper.

One judge call per (item, rubric, run); an item's run score is the mean of its rubric scores; the bench
score averages items, then runs. Scores are also split by source benchmark (mf-AlpacaEval, ...) and by
preference dimension (rubric i belongs to dimension i of the item's preference set).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from eval.benches.common import Benchmark, Item, JudgeParser, Loaded, Option, RunSettings, judge_failures
from eval.engine import JudgeJob
from eval.parsing import parse_absolute
from eval.prompts import MULTIFACETED_JUDGE_SAMPLING, absolute_messages, absolute_template_hash
from eval.source_map import SUBSETS, UNMAPPED, map_sources, normalize
from eval.stats import bootstrap_mean
from janus_jax.jsonio import read_records

KEY_FIELDS = ("id", "rubric", "run")
TEMPLATE_HASH = absolute_template_hash
HUB_ID = "kaist-ai/Multifaceted-Bench"
BENCH_FILE = Option("bench-file", None, "Multifaceted Bench as a local .json/.jsonl/.parquet file "
                    "(default: the hub copy)", metavar="FILE")
RUNS = Option("runs", 3, "judge runs averaged (paper: 3)", type=int)


def load_multifaceted(source: str | None = None, limit: int | None = None) -> Loaded:
    """Multifaceted Bench rows; ids are row indices (the released set has no id column).

    ``source`` is a local file, or None / the hub id to download with ``datasets``. Rows without usable
    rubrics (``rubrics``, or the older ``rubric``) are reported, not evaluated.
    """
    if source is None or source == HUB_ID:
        import datasets

        rows = [dict(r) for r in datasets.load_dataset(HUB_ID, split="train")]
    else:
        rows = read_records(source)
    if limit is not None:
        rows = rows[:limit]
    items, bad = [], []
    for index, row in enumerate(rows):
        rid = str(index)
        rubrics = row.get("rubrics", row.get("rubric"))
        if isinstance(rubrics, dict):
            rubrics = [rubrics]
        problem = None
        if not rubrics:
            problem = "no rubrics (neither 'rubrics' nor 'rubric')"
        elif not all(isinstance(r, dict) and "criteria" in r and "score_descriptions" in r for r in rubrics):
            problem = "a rubric lacks 'criteria' or 'score_descriptions'"
        elif not row.get("prompt"):
            problem = "empty 'prompt'"
        elif not row.get("reference_answer"):
            problem = "empty 'reference_answer'"
        if problem:
            bad.append((rid, problem))
            continue
        items.append(
            Item(
                id=rid,
                turns=[row["prompt"]],
                system=row.get("system") or "",
                reference=[row["reference_answer"]],
                category=str(row.get("source", "")),
                meta={"rubrics": rubrics, "preference_set": row.get("preference_set") or []},
            )
        )
    return Loaded(items, bad)


def item_snapshots(items: list[Item]) -> list[dict[str, Any]]:
    """What aggregation needs about each item, saved in items.jsonl (rescore reads nothing else)."""
    mapping = map_sources([(it.id, it.prompt, it.category) for it in items])
    rows = []
    for it in items:
        prefs = it.meta.get("preference_set") or []
        rubrics = it.meta["rubrics"]
        dims = [(prefs[i].get("dimension") if i < len(prefs) else None) or f"rubric {i + 1}"
                for i in range(len(rubrics))]
        rows.append({
            "id": it.id, "cluster": normalize(it.prompt), "subset": mapping.subset_of[it.id], "source": it.category,
            "dimensions": dims, "n_rubrics": len(rubrics),
            "source_ambiguous": it.id in mapping.ambiguous,
        })
    return rows


def generation_options(item: Item, settings: RunSettings) -> dict[str, Any]:
    return settings.janus_sampling()


def judge_jobs(items: list[Item], answers: dict[str, list], settings: RunSettings) -> list[JudgeJob]:
    jobs = []
    for it in items:
        if it.id not in answers:
            continue
        response = answers[it.id][0]
        prefs = it.meta.get("preference_set") or []
        for r, rubric in enumerate(it.meta["rubrics"]):
            messages = absolute_messages(it.prompt, response, it.reference[0], rubric)
            dimension = prefs[r].get("dimension") if r < len(prefs) else None
            for run in range(settings.get(RUNS)):
                # The seed makes the runs distinct requests (and distinct cache entries).
                options = {**MULTIFACETED_JUDGE_SAMPLING, "seed": run}
                jobs.append(JudgeJob({"id": it.id, "rubric": r, "run": run}, messages, options, "absolute",
                                     {"dimension": dimension}))
    return jobs


def aggregate(snapshots: list[dict], judgments: list[dict], settings: RunSettings,
              responses: dict | None = None) -> dict[str, Any]:
    """Bench score with intervals per subset, per dimension and overall; per-run scores; failure counts."""
    meta = {s["id"]: s for s in snapshots}
    # scores[id][run] -> list of rubric scores; dim_scores[id][rubric] -> list over runs
    scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    rubric_scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in judgments:
        if row.get("value") is None or row["id"] not in meta:
            continue
        scores[row["id"]][int(row["run"])].append(float(row["value"]))
        rubric_scores[row["id"]][int(row["rubric"])].append(float(row["value"]))
    item_score = {i: float(np.mean([np.mean(v) for v in runs.values()])) for i, runs in scores.items()}
    ids = [i for i in meta if i in item_score]

    def estimate(subset_ids: list[str]) -> dict:
        return bootstrap_mean([item_score[i] for i in subset_ids], [meta[i]["cluster"] for i in subset_ids],
                              settings.rounds, settings.seed, settings.level).to_dict()

    by_subset = {s: estimate([i for i in ids if meta[i]["subset"] == s]) for s in (*SUBSETS, UNMAPPED)}
    by_subset = {s: e for s, e in by_subset.items() if e["n"] > 0}
    dim_values: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for i in ids:
        for r, values in rubric_scores[i].items():
            dims = meta[i]["dimensions"]
            dimension = dims[r] if r < len(dims) else f"rubric {r + 1}"
            dim_values[dimension].append((float(np.mean(values)), meta[i]["cluster"]))
    by_dimension = {
        d: bootstrap_mean([v for v, _ in vals], [c for _, c in vals], settings.rounds, settings.seed,
                          settings.level).to_dict()
        for d, vals in sorted(dim_values.items())
    }
    per_run = []
    for run in range(settings.get(RUNS)):
        run_items = [np.mean(scores[i][run]) for i in ids if scores[i].get(run)]
        per_run.append(float(np.mean(run_items)) if run_items else None)
    expected = sum(s["n_rubrics"] for s in snapshots) * settings.get(RUNS)
    problems = judge_failures(judgments)
    problems["no_score"] = [i for i in meta if i not in item_score]
    problems["source_ambiguous"] = [s["id"] for s in snapshots if s.get("source_ambiguous")]
    problems["source_unmapped"] = [s["id"] for s in snapshots if s["subset"] == UNMAPPED]
    return {
        "metric": "score (1-5)",
        "overall": estimate(ids),
        "by_subset": by_subset,
        "by_dimension": by_dimension,
        "per_run": per_run,
        "counts": {
            "items": len(snapshots), "scored_items": len(ids), "judge_calls_expected": expected,
            "judge_calls_scored": sum(1 for r in judgments if r.get("value") is not None),
        },
        "problems": {k: v for k, v in problems.items() if v},
    }


def table_columns(runs: list[dict]) -> list[tuple[str, Any]]:
    """One column per source benchmark present in any run, then the average (the paper's Table 2)."""
    present = [x for x in SUBSETS if any(x in s.get("by_subset", {}) for s in runs)]
    columns = [(x, lambda s, x=x: s.get("by_subset", {}).get(x)) for x in present]
    return columns + [("Multifaceted avg", lambda s: s.get("overall"))]


def plot(runs: list[dict], out_dir: Path) -> list[str]:
    """Scores by source benchmark and by preference dimension, with intervals."""
    from eval.plots import interval_plot

    runs = [s for s in runs if s.get("overall")]
    written = []
    for key, title, name, with_average in (
        ("by_subset", "Multifaceted Bench score by source benchmark", "scores_by_benchmark.png", True),
        ("by_dimension", "Multifaceted Bench score by preference dimension", "scores_by_dimension.png", False),
    ):
        labels, ests = [], []
        for s in runs:
            prefix = f"{s['model']}: " if len(runs) > 1 else ""
            for label, est in s.get(key, {}).items():
                labels.append(prefix + label.replace("_", " "))
                ests.append(est)
            if with_average:
                labels.append(prefix + "average")
                ests.append(s["overall"])
        if labels:
            interval_plot(labels, ests, title, "score (1-5), 95% interval", out_dir / name, (1, 5.4))
            written.append(name)
    return written


BENCHMARK = Benchmark(
    name="multifaceted",
    title="Multifaceted Bench",
    load=lambda settings, limit: load_multifaceted(settings.get(BENCH_FILE), limit),
    key_fields=KEY_FIELDS,
    item_snapshots=item_snapshots,
    generation_options=generation_options,
    judge_jobs=judge_jobs,
    parsers={"absolute": JudgeParser(lambda text: parse_absolute(text)[1],
                                     details=lambda text: {"feedback": parse_absolute(text)[0]})},
    template_hash=lambda settings: absolute_template_hash(),
    aggregate=aggregate,
    options=(BENCH_FILE, RUNS),
    table_columns=table_columns,
    plot=plot,
)
