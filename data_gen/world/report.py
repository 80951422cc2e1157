"""The repro report: mean judge score per condition with 95% bootstrap intervals, seen vs. unseen system
messages, per dimension, the gaps between conditions, the independent check's agreement with the judge,
and every failure counted.

Reads only `OUT/COND/generations.jsonl` (and the training metrics), so it can be rebuilt at any time:
`python -m data_gen.world report runs/repro`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from data_gen.world.values import DIMENSION_OF, DIMENSIONS
from eval.stats import bootstrap_mean
from janus_jax import markdown
from janus_jax.jsonio import read_jsonl

SPLITS = (("unseen", False), ("seen", True))


def item_score(row: dict[str, Any]) -> float | None:
    """Mean of an item's rubric scores; None when any rubric went unscored or the model gave no reply."""
    values = list(row["judge_scores"].values())
    if row.get("reply") is None or not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _estimate(values: list[float], rounds: int) -> dict[str, float]:
    return bootstrap_mean(values, rounds=rounds).to_dict()


def _paired_gap(a: dict[str, float], b: dict[str, float], rounds: int) -> dict[str, float]:
    """Mean of (b - a) over the items both scored, with a bootstrap interval over items."""
    common = sorted(set(a) & set(b))
    return _estimate([b[i] - a[i] for i in common], rounds)


def summarize(rows_by_condition: dict[str, list[dict]], rounds: int = 1000) -> dict[str, Any]:
    """Every number the report shows, as a dict (also written to summary.json)."""
    out: dict[str, Any] = {"overall": {}, "by_dimension": {}, "check_rate": {}, "gaps": {}, "agreement": {},
                           "failures": {}}
    item_scores: dict[tuple[str, str], dict[str, float]] = {}
    for cond, rows in rows_by_condition.items():
        failures = {"no_reply": sum(r.get("reply") is None for r in rows),
                    "judge_unscored": sum(1 for r in rows for v in r["judge_scores"].values()
                                          if v is None and r.get("reply") is not None)}
        out["failures"][cond] = failures
        agree = total = 0
        for split, seen in SPLITS:
            part = [r for r in rows if r["seen_system_message"] == seen]
            scored = {r["id"]: s for r in part if (s := item_score(r)) is not None}
            item_scores[(cond, split)] = scored
            out["overall"].setdefault(split, {})[cond] = _estimate(list(scored.values()), rounds)
            for dim in DIMENSIONS:
                vals = [v for r in part for vid, v in r["judge_scores"].items()
                        if DIMENSION_OF[vid] == dim and v is not None and r.get("reply") is not None]
                out["by_dimension"].setdefault(split, {}).setdefault(dim, {})[cond] = _estimate(vals, rounds)
            checks = [float(c) for r in part for c in r["checks"].values() if c is not None]
            out["check_rate"].setdefault(split, {})[cond] = _estimate(checks, rounds)
            for r in part:
                for vid, c in r["checks"].items():
                    s = r["judge_scores"].get(vid)
                    if c is not None and s is not None:
                        total += 1
                        agree += (s == 5) == c
        out["agreement"][cond] = {"agree": agree, "total": total, "rate": agree / total if total else None}
    conds = list(rows_by_condition)
    for split, _ in SPLITS:
        out["gaps"][split] = {f"{b} - {a}": _paired_gap(item_scores[(a, split)], item_scores[(b, split)], rounds)
                              for a, b in zip(conds, conds[1:], strict=False)}
    return out


def _fmt(e: dict[str, float]) -> str:
    if not e.get("n"):
        return "n/a"
    return f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"


def _gap_verdict(e: dict[str, float]) -> str:
    if not e.get("n"):
        return "n/a"
    if e["low"] > 0:
        return "real (interval above 0)"
    if e["high"] < 0:
        return "real, reversed (interval below 0)"
    return "not resolved (interval covers 0)"


def _training(out: Path, cond: str) -> list[str]:
    """Cells: last step, final train loss, held-out loss first -> last eval (from the run's metrics.jsonl)."""
    path = out / cond / f"janus-{cond}" / "metrics.jsonl"
    if not path.exists():
        return ["n/a"] * 3
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval/loss" in r]
    last = train[-1] if train else {}
    held = f"{evals[0]['eval/loss']:.3f} -> {evals[-1]['eval/loss']:.3f}" if evals else "n/a"
    return [str(last.get("step", "n/a")), f"{last['loss']:.3f}" if "loss" in last else "n/a", held]


def machine() -> str:
    """CPU model (from /proc/cpuinfo where there is one), core count and OS."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def plot(summary: dict[str, Any], conds: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 2]})
    width = 0.8 / len(conds)
    for ax, groups, title in ((axes[0], [s for s, _ in SPLITS], "mean score by system message"),
                              (axes[1], list(DIMENSIONS), "unseen system messages, by dimension")):
        for k, cond in enumerate(conds):
            ests = [summary["overall"][g][cond] if ax is axes[0] else summary["by_dimension"]["unseen"][g][cond]
                    for g in groups]
            vals = np.array([e["value"] if e["n"] else np.nan for e in ests])
            err = np.array([[e["value"] - e["low"], e["high"] - e["value"]] if e["n"] else [0, 0] for e in ests]).T
            ax.bar(np.arange(len(groups)) + (k - (len(conds) - 1) / 2) * width, vals, width, yerr=err, capsize=3,
                   label=cond)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylim(1, 5.2)
        ax.set_ylabel("judge score (1-5), 95% CI")
        ax.set_title(title)
    axes[0].legend(title="condition")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timings(out: Path, cond: str) -> dict[str, dict[str, float]]:
    path = out / cond / "timing.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _seconds(timings: dict, stage: str) -> str:
    t = timings.get(stage)
    return f"{t['wall_s']:.0f} ({t['cpu_s']:.0f})" if t else "n/a"


def _dimension_table(summary: dict, conds: list[str], split: str) -> list[str]:
    rows = ([d, *(_fmt(summary["by_dimension"][split][d][c]) for c in conds)] for d in DIMENSIONS)
    return markdown.table(["dimension", *conds], rows)


def write_report(out: Path, conditions: tuple[str, ...] | list[str], judge_stats: dict | None = None,
                 rounds: int = 1000) -> Path:
    """Write OUT/report.md, OUT/report.png and OUT/summary.json from the conditions' generations."""
    out = Path(out)
    conds = list(conditions)
    rows = {c: read_jsonl(out / c / "generations.jsonl") for c in conds}
    summary = summarize(rows, rounds)
    timings = {c: _timings(out, c) for c in conds}
    summary.update(timings=timings, judge=judge_stats or {}, conditions=conds)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, conds, out / "report.png")
    world = json.loads((out / "world" / "world.json").read_text()) if (out / "world" / "world.json").exists() else {}
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# System-message generalization on the synthetic world", "",
        f"{now}, {machine()}. World: {json.dumps(world.get('config', {}))}. Judge: rule-based, over the OpenAI "
        "protocol (eval/rule_judge.py), 1 run per rubric. Intervals: 95% bootstrap over bench items.", "",
        "## Mean judge score (1-5)", "",
        *markdown.table(["condition", "unseen system messages", "seen system messages"],
                        ([c, _fmt(summary["overall"]["unseen"][c]), _fmt(summary["overall"]["seen"][c])]
                         for c in conds)),
        "", "## Gaps between conditions (paired over the same bench items)", "",
        *markdown.table(["gap", "split", "mean difference", "verdict"],
                        ([g, s, _fmt(e), _gap_verdict(e)] for s, _ in SPLITS for g, e in summary["gaps"][s].items())),
        "", "## By dimension, unseen system messages", "",
        *_dimension_table(summary, conds, "unseen"),
        "", "## By dimension, seen system messages", "",
        *_dimension_table(summary, conds, "seen"),
        "", "## Independent check (data_gen/world/checker.py) over generations.jsonl", "",
        "Fraction of (reply, value id) pairs the checker accepts, and how often it agrees with the judge "
        "(judge score 5 exactly when the check passes).", "",
        *markdown.table(["condition", "satisfied, unseen", "satisfied, seen", "agreement with the judge"],
                        ([c, _fmt(summary["check_rate"]["unseen"][c]), _fmt(summary["check_rate"]["seen"][c]),
                          f"{summary['agreement'][c]['agree']}/{summary['agreement'][c]['total']}"] for c in conds)),
        "", "## Training and failures", "",
        "Seconds are wall clock (CPU seconds of the stage's processes in parentheses: divided by the cores, the "
        "time on an idle machine).", "",
        *markdown.table(["condition", "steps", "final train loss", "held-out loss (first -> last eval)", "no reply",
                         "unscored rubrics", "train s", "serve+generate+judge s"],
                        ([c, *_training(out, c), summary["failures"][c]["no_reply"],
                          summary["failures"][c]["judge_unscored"], _seconds(timings[c], "train"),
                          _seconds(timings[c], "eval")] for c in conds)),
        "", f"Judge requests answered: {summary['judge'].get('answered', 'n/a')}, refused as unreadable: "
        f"{summary['judge'].get('refused', 'n/a')}.", "", "![scores](report.png)", "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
