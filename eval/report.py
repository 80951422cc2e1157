"""report.md (paper-style tables with intervals) and PNG plots, for one run or several side by side."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

from etils import epath

from eval.benches import benchmarks
from eval.benches.common import Benchmark
from janus_jax import markdown
from janus_jax.paths import to_path, write_atomic

_MAX_IDS = 20


def fmt(est: dict | None, digits: int = 2) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    value = f"{est['value']:.{digits}f}"
    if est.get("low") is None or est["low"] != est["low"]:  # NaN interval
        return value
    return f"{value} [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"


def load_scores(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = to_path(run_dir) / "scores.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no scores.json (not a finished eval run directory)")
    scores = json.loads(path.read_text())
    scores["_dir"] = str(run_dir)
    return scores


def _columns(bench: Benchmark, runs: list[dict]) -> list[tuple[str, Any]]:
    if bench.table_columns:
        return bench.table_columns(runs)
    return [(bench.title, lambda s: s.get("overall"))]


# ----------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------


def main_table(runs: list[dict]) -> list[str]:
    """Rows = models, columns = benchmarks in registry order (each bench names its own columns)."""
    by_model: dict[str, dict[str, dict]] = defaultdict(dict)
    for s in runs:
        by_model[s["model"]][s["benchmark"]] = s
    registered = benchmarks()
    header = ["Model"]
    cells: list[tuple[Benchmark, Any]] = []
    for name, bench in registered.items():
        present = [m[name] for m in by_model.values() if name in m]
        if present:
            for label, extract in _columns(bench, present):
                header.append(label)
                cells.append((bench, extract))
    rows = []
    for model, benches in by_model.items():
        rows.append([model] + [fmt(extract(benches[b.name]) if b.name in benches else None, b.digits)
                               for b, extract in cells])
    return markdown.table(header, rows)


def run_sections(s: dict) -> list[str]:
    bench = benchmarks()[s["benchmark"]]
    digits = bench.digits
    lines = [f"## {bench.title}: {s['model']}", ""]
    lines.append(f"Judge `{s['judge']}`, judge-prompt hash `{s['template_hash']}`, parser v{s['parser_version']}; "
                 f"{round(100 * s['level'])}% percentile bootstrap over prompts, "
                 f"{s['rounds']} rounds, seed {s['seed']}.")
    if bench.report_lines:
        lines[-1] += " " + " ".join(bench.report_lines(s))
    lines.append("")
    lines += markdown.table(["metric", "value [interval]", "n"],
                            [[s["metric"], fmt(s.get("overall"), digits), str((s.get("overall") or {}).get("n", ""))]])
    for key, title in (("by_subset", "By source benchmark"), ("by_dimension", "By preference dimension"),
                       ("by_turn", "By turn"), ("by_category", "By category"), ("rates", "Rates")):
        if s.get(key):
            lines += ["", f"### {title}", ""]
            lines += markdown.table(["", "value [interval]", "n"],
                                    [[k, fmt(v, digits), str(v.get("n", ""))] for k, v in s[key].items()])
    if s.get("per_run"):
        lines += ["", "Per judge run: " + ", ".join(f"{v:.3f}" if v is not None else "n/a" for v in s["per_run"])]
    if s.get("counts"):
        lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items())]
    if s.get("failure_reasons"):
        lines += ["", "Top failure reasons: " + "; ".join(f"{r['count']}x {r['reason']}" for r in s["failure_reasons"])]
    lines += ["", "### Problems", ""]
    if s.get("problems"):
        for kind, ids in s["problems"].items():
            shown = ", ".join(map(str, ids[:_MAX_IDS])) + (" ..." if len(ids) > _MAX_IDS else "")
            lines.append(f"- **{kind}**: {len(ids)} ({shown})")
    else:
        lines.append("None: every item was answered, judged and parsed.")
    return lines


def write_report(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> epath.Path:
    """Write report.md and the plots for the given run directories (local or gs://) into ``out_dir``."""
    out_dir = to_path(out_dir)
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
    write_atomic(path, "\n".join(lines))
    return path


def plot_runs(runs: list[dict], out_dir: epath.Path) -> list[str]:
    """Each benchmark's own figures, then one figure of every summary-plot benchmark's overall score."""
    from eval.plots import interval_plot

    written = []
    registered = benchmarks()
    for name, bench in registered.items():
        selected = [s for s in runs if s["benchmark"] == name]
        if selected and bench.plot:
            written += bench.plot(selected, out_dir)
    summary = [s for s in runs if registered[s["benchmark"]].in_summary_plot and s.get("overall")]
    if summary:
        interval_plot([f"{s['model']}: {registered[s['benchmark']].title}" for s in summary],
                      [s["overall"] for s in summary], "Helpfulness benchmarks", "score, 95% interval",
                      out_dir / "helpfulness.png")
        written.append("helpfulness.png")
    return written
