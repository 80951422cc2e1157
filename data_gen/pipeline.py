"""The whole synthesis run: stages in order, each reading the previous stage's rows from ``OUT/stages``.

Layout of ``OUT``::

    stages/    instructions.jsonl, instructions.rejected.jsonl, <stage>.jsonl, <stage>.failures.jsonl
               (intermediate rows; each carries its template version)
    final/     sft, small, dpo, orpo, rm, bench: <split>/train.parquet in the released schemas;
               provenance/<split>.jsonl (row-aligned instruction ids, set indices, template versions)
    cache/     llm_cache.jsonl, every completed LLM call (the default --cache)
    batches/   Batch API state (only with --batch)
    failures.jsonl   every preference set that did not reach the SFT split, with stage and reason
    manifest.json    inputs, model, templates, counts, hashes
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from etils import epath

from data_gen import preference_sets, responses, rubrics, system_messages
from data_gen.instructions import Decontaminator, load_instructions
from data_gen.splits import build_splits
from data_gen.stage_runner import LLMTask, StageReport, load_stage_rows, run_llm_stage, stage_paths
from janus_jax.jsonio import read_jsonl, sha256_file, write_json_atomic, write_jsonl_atomic
from janus_jax.llm import LLMClient, price_for, run_batch
from janus_jax.paths import to_path

log = logging.getLogger(__name__)

STAGES = ("instructions", "preference_sets", "system_messages", "responses", "rubrics", "splits")
DEFAULT_STAGES = ("instructions", "preference_sets", "system_messages", "responses", "splits")
LLM_STAGES = {module.NAME: module for module in (preference_sets, system_messages, responses, rubrics)}
MANIFEST_VERSION = 1


@dataclass
class PipelineConfig:
    out: epath.Path  # local or gs://
    model: str
    sources: list[str] = field(default_factory=list)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    stages: tuple[str, ...] = DEFAULT_STAGES
    limit: int | None = None
    seed: int = 0
    decontaminate: list[str] = field(default_factory=list)
    cache_path: epath.Path | None = None  # default: OUT/cache/llm_cache.jsonl
    max_concurrency: int = 64
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 6
    retry_backoff_s: float = 1.0
    timeout_s: float = 600.0
    max_reasks: int = 2
    max_tokens_cap: int | None = None  # lower every stage's max_tokens (small local models and contexts)
    prices: dict[str, tuple[float, float]] | None = None
    batch: bool = False
    batch_poll_s: float = 30.0
    progress: bool = True
    command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = to_path(self.out)
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
        default_cache = self.out / "cache" / "llm_cache.jsonl"
        self.cache_path = default_cache if self.cache_path is None else to_path(self.cache_path)

    @property
    def stage_dir(self) -> epath.Path:
        return self.out / "stages"


# ------------------------------------------------------------------------------------------ stage 1
def run_instruction_stage(config: PipelineConfig, write: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load, filter and (when ``write``) persist the instructions; returns rows and a report dict."""
    if not config.sources:
        raise ValueError("the instructions stage needs at least one --instructions source")
    decontaminator = Decontaminator.from_files(config.decontaminate) if config.decontaminate else None
    report = load_instructions(config.sources, limit=config.limit, decontaminator=decontaminator)
    for rejected in report.rejected:
        log.warning("instruction %s rejected: %s", rejected["origin"], rejected["reason"])
    if write:
        write_jsonl_atomic(config.stage_dir / "instructions.jsonl", report.rows)
        write_jsonl_atomic(config.stage_dir / "instructions.rejected.jsonl", report.rejected)
    return report.rows, {"counts": report.counts, "sources": report.sources}


def read_instructions(config: PipelineConfig) -> list[dict[str, Any]]:
    path = config.stage_dir / "instructions.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the instructions stage first")
    rows = read_jsonl(path)
    return rows[: config.limit] if config.limit is not None else rows


# ------------------------------------------------------------------------------------------ LLM stages
def stage_tasks(
    name: str, instructions: list[dict[str, Any]], upstream: dict[str, dict[str, dict[str, Any]]], seed: int
) -> list[LLMTask]:
    """The tasks of an LLM stage given the rows of the stages before it."""
    ids = [row["id"] for row in instructions]
    prefs = [upstream["preference_sets"][i] for i in ids if i in upstream.get("preference_sets", {})]
    if name == "preference_sets":
        return preference_sets.build_tasks(instructions, seed)
    if name == "system_messages":
        return system_messages.build_tasks(prefs)
    systems = [
        upstream["system_messages"][f"{row['instruction_id']}/{k}"]
        for row in prefs
        for k in range(len(row["preference_sets"]))
        if f"{row['instruction_id']}/{k}" in upstream.get("system_messages", {})
    ]
    if name == "responses":
        return responses.build_tasks(systems, {row["id"]: row["prompt"] for row in instructions})
    if name == "rubrics":
        answered = {(r["instruction_id"], r["set_index"]) for r in upstream.get("responses", {}).values()}
        return rubrics.build_tasks(prefs, answered)
    raise ValueError(f"{name} is not an LLM stage")


def _cap_max_tokens(tasks: list[LLMTask], cap: int | None) -> None:
    if cap is None:
        return
    for task in tasks:
        task.options = {**task.options, "max_tokens": min(task.options.get("max_tokens") or cap, cap)}


async def _run_stage_with_batches(
    config: PipelineConfig, client: LLMClient, name: str, tasks: list[LLMTask]
) -> StageReport:
    template = LLM_STAGES[name].TEMPLATE.tag
    totals: StageReport | None = None
    while True:
        client.defer_to_batch = config.batch
        report = await run_llm_stage(name, template, tasks, client, config.stage_dir, progress=config.progress)
        if totals is None:
            totals = report
        else:  # later rounds: the cache answers; keep the first round's "done before" count
            report.done_before = totals.done_before
            report.written += totals.written
            for key, value in totals.client_stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    report.client_stats[key] = report.client_stats.get(key, 0) + value
            totals = report
        if report.complete:
            client.defer_to_batch = False
            return totals
        log.info("%s: %d requests go to the Batch API", name, report.deferred)
        await run_batch(client, config.out / "batches", poll_interval_s=config.batch_poll_s)


# ------------------------------------------------------------------------------------------ accounting
def set_failures(
    instructions: list[dict[str, Any]],
    rows: dict[str, dict[str, dict[str, Any]]],
    stage_failures: dict[str, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Why each preference set that is not in the SFT split is missing: one failure row per set."""
    reasons: dict[tuple[str, str], str] = {}
    for name, failures in stage_failures.items():
        for failure in failures:
            reasons[(name, failure["id"])] = failure["reason"]
    out: list[dict[str, Any]] = []
    counts = {"sets_expected": 0, "sets_in_sft": 0, "sets_failed": 0, "sets_not_run": 0}
    n_sets = preference_sets.SETS_PER_INSTRUCTION
    for instruction in instructions:
        iid = instruction["id"]
        for k in range(n_sets):
            counts["sets_expected"] += 1
            chain = [("preference_sets", iid), ("system_messages", f"{iid}/{k}"), ("responses", f"{iid}/{k}")]
            missing = next(((name, key) for name, key in chain if key not in rows.get(name, {})), None)
            if missing is None:
                counts["sets_in_sft"] += 1
                continue
            reason = reasons.get(missing)
            if reason is None:
                counts["sets_not_run"] += 1
                continue
            counts["sets_failed"] += 1
            out.append(
                {
                    "instruction_id": iid,
                    "set_index": k,
                    "stage": missing[0],
                    "reason": reason,
                    "origin": instruction.get("origin"),
                }
            )
    assert counts["sets_in_sft"] + counts["sets_failed"] + counts["sets_not_run"] == counts["sets_expected"]
    return out, counts


def failure_reasons(failures: list[dict[str, Any]], top: int = 5) -> list[dict[str, Any]]:
    """The most common failure reasons of this run's calls (by stage), with their counts."""
    counts = Counter((f["stage"], " ".join(str(f["reason"]).split())[:160]) for f in failures)
    return [{"stage": stage, "reason": reason, "count": n} for (stage, reason), n in counts.most_common(top)]


def unusable_reason(manifest: dict[str, Any]) -> str | None:
    """Why a run produced nothing usable (no instruction kept, or a stage whose every call failed), or None."""
    counts = manifest.get("instruction_counts")
    if counts is not None and counts.get("kept", 0) == 0:
        return f"no instruction was kept ({', '.join(f'{k}={v}' for k, v in counts.items())})"
    for name, stage in manifest.get("stages", {}).items():
        if stage["failed"] and stage["done_before"] + stage["written"] == 0:
            return f"every call of stage {name} failed ({stage['failed']} of {stage['tasks']}); no row was written"
    return None


# ------------------------------------------------------------------------------------------ the run
def make_client(config: PipelineConfig) -> LLMClient:
    return LLMClient(
        config.model,
        config.base_url,
        api_key_env=config.api_key_env,
        max_concurrency=config.max_concurrency,
        requests_per_minute=config.requests_per_minute,
        tokens_per_minute=config.tokens_per_minute,
        max_retries=config.max_retries,
        backoff_base_s=config.retry_backoff_s,
        timeout_s=config.timeout_s,
        cache_path=config.cache_path,
        max_reasks=config.max_reasks,
        prices=config.prices,
    )


async def _run(config: PipelineConfig) -> dict[str, Any]:
    started = datetime.datetime.now(datetime.UTC)
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "started": started.isoformat(),
        "command": config.command,
        "model": config.model,
        "base_url": config.base_url,
        "seed": config.seed,
        "stages_run": list(config.stages),
        "limit": config.limit,
    }
    if "instructions" in config.stages:
        instructions, instruction_report = run_instruction_stage(config)
        manifest["inputs"] = instruction_report["sources"]
        manifest["instruction_counts"] = instruction_report["counts"]
        manifest["decontaminate"] = config.decontaminate
    else:
        instructions = read_instructions(config)
    wanted_ids = {row["id"] for row in instructions}

    rows: dict[str, dict[str, dict[str, Any]]] = {}
    stage_failures: dict[str, list[dict[str, Any]]] = {}
    stage_reports: dict[str, dict[str, Any]] = {}
    client = make_client(config) if any(name in config.stages for name in LLM_STAGES) else None
    try:
        for name, module in LLM_STAGES.items():
            if name in config.stages:
                assert client is not None
                tasks = stage_tasks(name, instructions, rows, config.seed)
                _cap_max_tokens(tasks, config.max_tokens_cap)
                report = await _run_stage_with_batches(config, client, name, tasks)
                rows[name] = {row["id"]: row for row in report.rows}
                stage_failures[name] = report.failures
                stage_reports[name] = {
                    "template": report.template,
                    "tasks": report.tasks,
                    "done_before": report.done_before,
                    "written": report.written,
                    "failed": report.failed,
                    "client": report.client_stats,
                }
            else:
                stage_rows = load_stage_rows(config.stage_dir, name, module.TEMPLATE.tag)
                rows[name] = {k: v for k, v in stage_rows.items() if v["instruction_id"] in wanted_ids}
                stage_failures[name] = [
                    f
                    for f in read_jsonl(stage_paths(config.stage_dir, name)["failures"], missing_ok=True)
                    if f["instruction_id"] in wanted_ids
                ]
    finally:
        if client is not None:
            await client.aclose()
            client.close()

    failures, set_counts = set_failures(instructions, rows, stage_failures)
    write_jsonl_atomic(config.out / "failures.jsonl", failures)
    manifest["failure_reasons"] = failure_reasons([f for name in stage_reports for f in stage_failures[name]])
    manifest["stages"] = stage_reports
    manifest["set_counts"] = set_counts
    manifest["instructions"] = len(instructions)
    manifest["failures_by_stage"] = {name: len(f) for name, f in stage_failures.items()}
    if "splits" in config.stages:
        rubric_rows = rows["rubrics"] if rows.get("rubrics") else None
        split_report = build_splits(
            instructions,
            rows["preference_sets"],
            rows["system_messages"],
            rows["responses"],
            rubric_rows,
            config.out,
            config.seed,
        )
        manifest["splits"] = split_report.files
        manifest["pairs_skipped"] = split_report.pairs_skipped
    manifest["templates"] = {
        m.TEMPLATE.name: {"version": m.TEMPLATE.version, "sha256": m.TEMPLATE.sha256} for m in LLM_STAGES.values()
    }
    manifest["stage_files"] = {
        name: {
            "rows": len(rows.get(name, {})),
            "sha256": _sha256_if_present(stage_paths(config.stage_dir, name)["rows"]),
        }
        for name in ("instructions", *LLM_STAGES)
    }
    manifest["stage_files"]["instructions"]["rows"] = len(instructions)
    if client is not None:
        manifest["client"] = client.stats.as_dict()
    manifest["finished"] = datetime.datetime.now(datetime.UTC).isoformat()
    write_json_atomic(config.out / "manifest.json", manifest)
    return manifest


def _sha256_if_present(path: epath.Path) -> str | None:
    return sha256_file(path) if path.exists() else None


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    """Run the selected stages; returns the manifest (also written to OUT/manifest.json)."""
    config.out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(config))


# ------------------------------------------------------------------------------------------ dry run
def _tokens(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages) // 4 + 8


def estimate(config: PipelineConfig) -> dict[str, Any]:
    """Calls, tokens and cost the selected stages would need, without calling anything.

    Counts skip rows already in the stage files; the cost is an upper bound (cache hits are free).
    Prompt sizes of the first LLM stage are exact; later ones use typical sizes of earlier replies.
    """
    if "instructions" in config.stages:
        instructions, _ = run_instruction_stage(config, write=False)
    else:
        instructions = read_instructions(config)
    n = len(instructions)
    sets = preference_sets.SETS_PER_INSTRUCTION
    price = price_for(config.model, config.prices)
    typical_system = "x" * 4 * system_messages.TYPICAL_COMPLETION_TOKENS
    typical_description = "x" * 4 * 60
    stages: dict[str, dict[str, Any]] = {}
    for name, module in LLM_STAGES.items():
        if name not in config.stages:
            continue
        done = load_stage_rows(config.stage_dir, name, module.TEMPLATE.tag)
        ids = {row["id"] for row in instructions}
        done_count = sum(1 for row in done.values() if row["instruction_id"] in ids)
        if name == "preference_sets":
            todo = [r for r in instructions if r["id"] not in done]
            prompt_tokens = sum(_tokens(t.messages) for t in preference_sets.build_tasks(todo, config.seed))
            calls = len(todo)
        else:
            per_instruction = {"system_messages": sets, "responses": sets, "rubrics": sets * 4}[name]
            calls = max(0, n * per_instruction - done_count)
            if name == "system_messages":
                one = _tokens(module.TEMPLATE.messages(descriptions="\n".join([typical_description] * 4)))
                prompt_tokens = one * calls
            elif name == "responses":
                mean_prompt = sum(len(r["prompt"]) for r in instructions) / max(1, n)
                prompt_tokens = int(
                    (_tokens(module.TEMPLATE.messages(system=typical_system, prompt="")) + mean_prompt / 4) * calls
                )
            else:
                one = _tokens(
                    module.TEMPLATE.messages(preference=typical_description, **rubrics.example_rubrics("style"))
                )
                prompt_tokens = one * calls
        typical = module.TYPICAL_COMPLETION_TOKENS
        completion_tokens = calls * (min(typical, config.max_tokens_cap) if config.max_tokens_cap else typical)
        cost = None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
        stages[name] = {
            "calls": calls,
            "done_before": done_count,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": None if cost is None else round(cost, 4),
        }
    total_cost = None if price is None else round(sum(s["cost_usd"] for s in stages.values()), 4)
    return {
        "model": config.model,
        "instructions": n,
        "price_per_million": price,
        "stages": stages,
        "total_calls": sum(s["calls"] for s in stages.values()),
        "total_cost_usd": total_cost,
        "batch_cost_usd": None if total_cost is None else round(total_cost / 2, 4),
    }


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
