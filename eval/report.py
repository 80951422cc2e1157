"""report.md (paper-style tables with intervals) and PNG plots, for one run or several side by side."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from eval.source_map import SUBSETS

BENCH_TITLES = {
    "multifaceted": "Multifaceted Bench", "pairwise": "Pairwise", "mt_bench": "MT-Bench",
    "arena_hard": "Arena-Hard v0.1", "alpaca_eval": "AlpacaEval 2.0 LC", "rtp": "RealToxicityPrompts",
}
_COLORS = {"win": "#2a9d8f", "tie": "#e9c46a", "loss": "#e76f51", "bar": "#457b9d", "edge": "#1d3557"}
_MAX_IDS = 20


def fmt(est: dict | None, digits: int = 2) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    value = f"{est['value']:.{digits}f}"
    if est.get("low") is None or est["low"] != est["low"]:  # NaN interval
        return value
    return f"{value} [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"


def load_scores(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "scores.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no scores.json (not a finished eval run directory)")
    scores = json.loads(path.read_text())
    scores["_dir"] = str(run_dir)
    return scores


def _digits(bench: str) -> int:
    return 1 if bench in ("pairwise", "arena_hard", "alpaca_eval") else 2


# ----------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def main_table(runs: list[dict]) -> list[str]:
    """Rows = models, columns = benchmarks (Multifaceted Bench split into its five sources)."""
    by_model: dict[str, dict[str, dict]] = defaultdict(dict)
    for s in runs:
        by_model[s["model"]][s["benchmark"]] = s
    benches = [b for b in BENCH_TITLES if any(b in m for m in by_model.values())]
    header = ["Model"]
    for b in benches:
        if b == "multifaceted":
            present = _subsets_present(by_model)
            header += present + ["Multifaceted avg"]
        elif b == "pairwise":
            header += ["Pairwise tie+win (%)"]
        else:
            header += [BENCH_TITLES[b]]
    rows = []
    for model, benchmarks in by_model.items():
        row = [model]
        for b in benches:
            s = benchmarks.get(b)
            if b == "multifaceted":
                present = _subsets_present(by_model)
                row += [fmt((s or {}).get("by_subset", {}).get(x)) for x in present]
            row.append(fmt((s or {}).get("overall"), _digits(b)))
        rows.append(row)
    return _table(header, rows)


def _subsets_present(by_model: dict[str, dict[str, dict]]) -> list[str]:
    return [x for x in SUBSETS if any(x in m.get("multifaceted", {}).get("by_subset", {}) for m in by_model.values())]


def run_sections(s: dict) -> list[str]:
    bench, digits = s["benchmark"], _digits(s["benchmark"])
    lines = [f"## {BENCH_TITLES.get(bench, bench)}: {s['model']}", ""]
    lines.append(f"Judge `{s['judge']}`, judge-prompt hash `{s['template_hash']}`, parser v{s['parser_version']}; "
                 f"{round(100 * s['level'])}% percentile bootstrap over prompts, "
                 f"{s['rounds']} rounds, seed {s['seed']}.")
    if bench == "alpaca_eval":
        lines[-1] += " AlpacaEval intervals are +-1.96 standard errors, as AlpacaEval reports them."
    lines.append("")
    lines += _table(["metric", "value [interval]", "n"],
                    [[s["metric"], fmt(s.get("overall"), digits), str((s.get("overall") or {}).get("n", ""))]])
    for key, title in (("by_subset", "By source benchmark"), ("by_dimension", "By preference dimension"),
                       ("by_turn", "By turn"), ("by_category", "By category"), ("rates", "Rates")):
        if s.get(key):
            lines += ["", f"### {title}", ""]
            lines += _table(["", "value [interval]", "n"],
                            [[k, fmt(v, digits), str(v.get("n", ""))] for k, v in s[key].items()])
    if s.get("per_run"):
        lines += ["", "Per judge run: " + ", ".join(f"{v:.3f}" if v is not None else "n/a" for v in s["per_run"])]
    if s.get("counts"):
        lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items())]
    lines += ["", "### Problems", ""]
    if s.get("problems"):
        for kind, ids in s["problems"].items():
            shown = ", ".join(map(str, ids[:_MAX_IDS])) + (" ..." if len(ids) > _MAX_IDS else "")
            lines.append(f"- **{kind}**: {len(ids)} ({shown})")
    else:
        lines.append("None: every item was answered, judged and parsed.")
    return lines


def write_report(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write report.md and the plots for the given run directories into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [load_scores(d) for d in run_dirs]
    lines = ["# Evaluation report", ""]
    lines += main_table(runs)
    lines.append("")
    for name in plot_runs(runs, out_dir):
        lines += [f"![{name}]({name})", ""]
    for s in runs:
        lines += run_sections(s) + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------


def _axes(n_rows: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.45 * max(n_rows, 2)), dpi=150)
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def _interval_plot(labels: list[str], ests: list[dict], title: str, xlabel: str, path: Path,
                   xlim: tuple[float, float] | None = None) -> None:
    fig, ax = _axes(len(labels), title)
    ys = list(range(len(labels)))[::-1]
    values = [e["value"] for e in ests]
    lows = [e["value"] - e["low"] if e.get("low") == e.get("low") else 0 for e in ests]
    highs = [e["high"] - e["value"] if e.get("high") == e.get("high") else 0 for e in ests]
    colors = [_COLORS["edge"] if label.endswith("average") else _COLORS["bar"] for label in labels]
    ax.barh(ys, values, color=colors, height=0.55, alpha=0.85)
    ax.errorbar(values, ys, xerr=[lows, highs], fmt="none", ecolor=_COLORS["edge"], capsize=3, linewidth=1.2)
    for y, v, e in zip(ys, values, ests, strict=True):
        ax.text(e.get("high", v) if e.get("high") == e.get("high") else v, y, f"  {v:.2f}", va="center", fontsize=8)
    ax.set_yticks(ys, labels, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    if xlim:
        ax.set_xlim(*xlim)
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_runs(runs: list[dict], out_dir: Path) -> list[str]:
    """Score-by-benchmark, score-by-dimension and win/tie/loss plots; returns the file names written."""
    written = []
    multi = [s for s in runs if s["benchmark"] == "multifaceted" and s.get("overall")]
    if multi:
        labels, ests = [], []
        for s in multi:
            prefix = f"{s['model']}: " if len(multi) > 1 else ""
            for subset, est in s.get("by_subset", {}).items():
                labels.append(prefix + subset)
                ests.append(est)
            labels.append(prefix + "average")
            ests.append(s["overall"])
        _interval_plot(labels, ests, "Multifaceted Bench score by source benchmark", "score (1-5), 95% interval",
                       out_dir / "scores_by_benchmark.png", (1, 5.4))
        written.append("scores_by_benchmark.png")
        labels, ests = [], []
        for s in multi:
            prefix = f"{s['model']}: " if len(multi) > 1 else ""
            for dim, est in s.get("by_dimension", {}).items():
                labels.append(prefix + dim.replace("_", " "))
                ests.append(est)
        if labels:
            _interval_plot(labels, ests, "Multifaceted Bench score by preference dimension",
                           "score (1-5), 95% interval", out_dir / "scores_by_dimension.png", (1, 5.4))
            written.append("scores_by_dimension.png")
    others = [s for s in runs if s["benchmark"] in ("mt_bench", "arena_hard", "alpaca_eval") and s.get("overall")]
    if others:
        _interval_plot([f"{s['model']}: {BENCH_TITLES[s['benchmark']]}" for s in others],
                       [s["overall"] for s in others], "Helpfulness benchmarks", "score, 95% interval",
                       out_dir / "helpfulness.png")
        written.append("helpfulness.png")
    pairs = [s for s in runs if s["benchmark"] == "pairwise" and s.get("rates")]
    if pairs:
        _win_tie_loss(pairs, out_dir / "win_tie_loss.png")
        written.append("win_tie_loss.png")
    return written


def _win_tie_loss(runs: list[dict], path: Path) -> None:
    fig, ax = _axes(len(runs), "Pairwise outcome")
    ys = list(range(len(runs)))[::-1]
    for y, s in zip(ys, runs, strict=True):
        left = 0.0
        for kind in ("win", "tie", "loss"):
            value = s["rates"][kind]["value"]
            ax.barh(y, value, left=left, color=_COLORS[kind], height=0.55, label=kind if y == ys[0] else None)
            if value >= 6:
                ax.text(left + value / 2, y, f"{value:.1f}%", ha="center", va="center", fontsize=8, color="white")
            left += value
    ax.set_yticks(ys, [f"{s['model']} vs {s.get('baseline', 'baseline')}" for s in runs], fontsize=9)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of items (judged in both orders; disagreement counts as a tie)", fontsize=9)
    ax.legend(ncol=3, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
