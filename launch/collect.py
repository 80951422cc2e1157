"""Gather the final and best metrics of every sweep point into a Markdown/CSV table and a plot.

Rows are labelled from ``sweep.json`` (overrides, launch outcome) and each point's ``manifest.json``
(run status, code version). Unreadable metric lines are counted and reported, never skipped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from etils import epath

from janus_jax import manifest as run_manifest
from janus_jax import markdown
from janus_jax.paths import is_url, to_path, write_atomic, write_figure
from launch.sweep import SWEEP_RECORD

METRICS_FILE = "metrics.jsonl"
TABLE_MD, TABLE_CSV, PLOT_PNG = "results.md", "results.csv", "results.png"
EVAL_LOSS = "eval/loss"


@dataclass
class MetricsLog:
    rows: list[dict] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def read_metrics(path: epath.Path) -> MetricsLog:
    """Rows of a metrics JSONL file; lines that are not JSON objects with an int step are listed."""
    log = MetricsLog()
    if not path.exists():
        return log
    for number, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            log.malformed.append(f"{path}:{number}: not JSON ({err.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            log.malformed.append(f"{path}:{number}: not an object with an integer 'step'")
            continue
        log.rows.append(row)
    return log


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(row["step"], float(row[key])) for row in rows if _finite(row.get(key))]


def summarize(rows: list[dict], key: str) -> dict[str, Any]:
    """Final and best (lowest) value of ``key`` with their steps; empty when never logged."""
    points = series(rows, key)
    if not points:
        return {}
    final_step, final = points[-1]
    best_step, best = min(points, key=lambda p: p[1])
    return {"final": final, "final_step": final_step, "best": best, "best_step": best_step}


def _status(launch_entry: dict | None, manifest: dict | None) -> str:
    """A finished run's own status wins; else what the launcher saw; else the manifest's 'running'."""
    if manifest and manifest.get("status") not in (None, "running"):
        return str(manifest["status"])
    if launch_entry and launch_entry.get("status") not in (None, "pending"):
        return str(launch_entry["status"])
    if manifest:
        return str(manifest.get("status"))
    return "not started"


def _points(sweep_dir: epath.Path) -> tuple[list[dict], list[str]]:
    """Point entries from sweep.json, or (no record) every subdirectory that holds a run."""
    record_path = sweep_dir / SWEEP_RECORD
    if record_path.exists():
        record = json.loads(record_path.read_text())
        return record["points"], list(record.get("swept_keys", []))
    found = sorted(
        d
        for d in sweep_dir.iterdir()
        if d.is_dir() and ((d / METRICS_FILE).exists() or run_manifest.manifest_path(d).exists())
    )
    return [{"name": d.name, "workdir": str(d), "overrides": {}} for d in found], []


def collect(sweep_dir: str | os.PathLike) -> tuple[list[dict], list[str], list[str]]:
    """(rows, swept keys, problems): one row per point, every unreadable input named in problems.

    The sweep directory and the points' workdirs may be local or gs:// (read through the path layer).
    """
    sweep_dir = to_path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    entries, swept_keys = _points(sweep_dir)
    if not entries:
        raise FileNotFoundError(f"{sweep_dir}: no {SWEEP_RECORD} and no run directories in it")
    rows, problems = [], []
    for entry in entries:
        workdir = to_path(entry["workdir"])
        if not is_url(workdir) and not workdir.is_absolute() and not workdir.exists():
            workdir = sweep_dir / entry["name"]
        try:
            manifest = run_manifest.read_manifest(workdir)
        except ValueError as err:
            manifest = None
            problems.append(str(err))
        metrics = read_metrics(workdir / METRICS_FILE)
        problems.extend(metrics.malformed)
        train, evaluation = summarize(metrics.rows, "loss"), summarize(metrics.rows, EVAL_LOSS)
        row = {"point": entry["name"]}
        row.update({key: entry.get("overrides", {}).get(key, "") for key in swept_keys})
        row.update(
            status=_status(entry, manifest),
            last_step=max((r["step"] for r in metrics.rows), default=""),
            final_loss=train.get("final", ""),
            best_loss=train.get("best", ""),
            best_loss_step=train.get("best_step", ""),
            final_eval_loss=evaluation.get("final", ""),
            best_eval_loss=evaluation.get("best", ""),
            code=run_manifest.code_version(manifest),
            malformed_metric_lines=len(metrics.malformed),
        )
        row["_series"] = {"loss": series(metrics.rows, "loss"), EVAL_LOSS: series(metrics.rows, EVAL_LOSS)}
        rows.append(row)
    return rows, swept_keys, problems


def _columns(rows: list[dict]) -> list[str]:
    return [c for c in rows[0] if not c.startswith("_")]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    columns = _columns(rows)
    return "\n".join(markdown.table(columns, ([_cell(row[c]) for c in columns] for row in rows))) + "\n"


def csv_table(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot(rows: list[dict], path: epath.Path) -> bool:
    """Loss curves of every point (train, and eval when logged); False when nothing to plot."""
    if not any(row["_series"]["loss"] for row in rows):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_eval = any(row["_series"][EVAL_LOSS] for row in rows)
    fig, axes = plt.subplots(1, 2 if has_eval else 1, figsize=(12 if has_eval else 7, 4.5), squeeze=False)
    for key, axis in zip(("loss", EVAL_LOSS), axes[0], strict=False):
        for row in rows:
            points = row["_series"][key]
            if points:
                axis.plot(*zip(*points, strict=True), label=row["point"], marker="." if len(points) < 30 else None)
        axis.set_xlabel("step")
        axis.set_ylabel(key)
        axis.set_title(key)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    write_figure(fig, path, dpi=120)
    plt.close(fig)
    return True


def write_reports(sweep_dir: str | os.PathLike) -> tuple[str, list[str], list[str]]:
    """Write results.md / .csv (and .png when there are curves) into the sweep directory, local or gs://;
    return (Markdown, problems, files)."""
    sweep_dir = to_path(sweep_dir)
    rows, _, problems = collect(sweep_dir)
    table = markdown_table(rows)
    write_atomic(sweep_dir / TABLE_MD, table)
    write_atomic(sweep_dir / TABLE_CSV, csv_table(rows))
    written = [TABLE_MD, TABLE_CSV]
    if plot(rows, sweep_dir / PLOT_PNG):
        written.append(PLOT_PNG)
    return table, problems, written


def main_collect(sweep_dir: str) -> int:
    try:
        table, problems, written = write_reports(sweep_dir)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"collect: {err}", file=sys.stderr)
        return 2
    print(table, end="")
    for problem in problems:
        print(f"[collect] skipped unreadable input: {problem}", file=sys.stderr)
    if problems:
        print(
            f"[collect] {len(problems)} unreadable input(s); counts in the malformed_metric_lines column",
            file=sys.stderr,
        )
    print(f"[collect] wrote {', '.join(written)} in {sweep_dir}", file=sys.stderr)
    return 0
