"""Run one LLM stage resumably: one task per output row, rows appended as they finish.

Why this shape: a stage is a list of independent tasks (one chat call each). Finished rows go to
``<stage>.partial.jsonl`` the moment they arrive, so a killed run loses nothing; a restarted run skips
every task whose row exists (made with the same template version) and asks only for the rest (and
those replies already in the LLM cache cost nothing either). When every task has ended, the rows are
written in task order to ``<stage>.jsonl`` and the failures, with reasons, to
``<stage>.failures.jsonl``; the partial file is then removed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from etils import epath

from janus_jax.jsonio import Appender, read_jsonl, write_jsonl_atomic
from janus_jax.llm import ChatRequest, ChatResult, LLMClient
from janus_jax.paths import BUSY_LOG_FLUSH_S


@dataclass
class LLMTask:
    """One chat call and how its parsed reply becomes a row."""

    id: str
    instruction_id: str
    set_index: int | None
    messages: list[dict[str, str]]
    options: dict[str, Any]  # LLMClient.chat keyword arguments (sampling, validate, ...)
    build: Callable[[Any], dict[str, Any]]  # parsed reply -> the stage's own fields


@dataclass
class StageReport:
    name: str
    template: str
    tasks: int = 0
    done_before: int = 0
    written: int = 0
    failed: int = 0
    deferred: int = 0  # queued for the Batch API, not finished yet
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    client_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.deferred == 0


def stage_paths(stage_dir: epath.Path, name: str) -> dict[str, epath.Path]:
    return {
        "rows": stage_dir / f"{name}.jsonl",
        "partial": stage_dir / f"{name}.partial.jsonl",
        "failures": stage_dir / f"{name}.failures.jsonl",
    }


def load_stage_rows(stage_dir: epath.Path, name: str, template: str | None = None) -> dict[str, dict[str, Any]]:
    """Rows of a stage by id (final file, then the partial log; rows of another template are ignored)."""
    paths = stage_paths(stage_dir, name)
    rows: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(paths["rows"], missing_ok=True):
        rows[row["id"]] = row
    for row in read_jsonl(paths["partial"], skip_bad_lines=True, missing_ok=True):
        rows[row["id"]] = row
    if template is not None:
        rows = {k: v for k, v in rows.items() if v.get("template") == template}
    return rows


def _snapshot(client: LLMClient) -> dict[str, Any]:
    return copy.deepcopy(client.stats.as_dict())


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, (int, float)):
            out[key] = round(value - before.get(key, 0), 6)
        elif isinstance(value, dict):
            out[key] = {
                k: v - before.get(key, {}).get(k, 0) for k, v in value.items() if v - before.get(key, {}).get(k, 0)
            }
    return out


async def run_llm_stage(
    name: str, template: str, tasks: list[LLMTask], client: LLMClient, stage_dir: epath.Path, *, progress: bool = True
) -> StageReport:
    """Run the tasks not done yet; see the module docstring."""
    paths = stage_paths(stage_dir, name)
    existing = load_stage_rows(stage_dir, name, template)
    wanted = {task.id for task in tasks}
    todo = [task for task in tasks if task.id not in existing]
    report = StageReport(
        name=name, template=template, tasks=len(tasks), done_before=sum(1 for task_id in existing if task_id in wanted)
    )
    before = _snapshot(client)
    appender = Appender(paths["partial"], flush_interval_s=BUSY_LOG_FLUSH_S)
    new_rows: dict[str, dict[str, Any]] = {}

    def on_result(index: int, result: ChatResult) -> None:
        task = todo[index]
        if result.deferred:
            report.deferred += 1
            return
        if not result.ok:
            report.failed += 1
            report.failures.append(
                {
                    "stage": name,
                    "id": task.id,
                    "instruction_id": task.instruction_id,
                    "set_index": task.set_index,
                    "reason": result.error,
                }
            )
            return
        row = {"id": task.id, "instruction_id": task.instruction_id}
        if task.set_index is not None:
            row["set_index"] = task.set_index
        row.update(task.build(result.value))
        row["template"] = template
        appender.write(row)
        new_rows[task.id] = row
        report.written += 1

    try:
        requests = [ChatRequest(task.messages, task.options) for task in todo]
        await client.chat_many(requests, on_result=on_result, desc=name, progress=progress and bool(todo))
    finally:
        appender.close()
    report.client_stats = _delta(before, _snapshot(client))
    rows = {**existing, **new_rows}
    report.rows = [rows[task.id] for task in tasks if task.id in rows]
    if report.complete:
        write_jsonl_atomic(paths["rows"], report.rows)
        write_jsonl_atomic(paths["failures"], report.failures)
        paths["partial"].unlink(missing_ok=True)
    return report
