"""``run`` and ``rescore``: generate -> judge -> parse -> aggregate -> report, in one run directory.

Run directory::

    run.json          settings, models, judge, template hash, parser version, input problems, call stats
    items.jsonl       what aggregation needs about each item (so rescore needs no bench download)
    responses.jsonl   the evaluated model's answers (resumable: answered items are skipped)
    judgments.jsonl   one row per judge call with the raw reply (resumable; re-parsed by rescore)
    scores.json       aggregated metrics with intervals and problem lists
    report.md, *.png  the report
    cache/            the LLM client's call caches (a killed run repeats no call)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from eval.benches import alpaca_eval, arena_hard, mt_bench, multifaceted, pairwise
from eval.benches.common import RunSettings, answers_of
from eval.benchmarks import Item, load_benchmark, read_records
from eval.engine import generate, judge, rescore_rows
from eval.parsing import PARSER_VERSION
from eval.report import write_report
from eval.source_map import normalize
from eval.store import RowStore, row_key, write_json

log = logging.getLogger(__name__)

JUDGED_BENCHES: dict[str, ModuleType] = {
    "multifaceted": multifaceted, "pairwise": pairwise, "mt_bench": mt_bench, "arena_hard": arena_hard,
    "alpaca_eval": alpaca_eval,
}


@dataclasses.dataclass
class ModelSpec:
    """Where the evaluated model's answers come from: an endpoint, a checkpoint, or a file of answers."""

    name: str
    base_url: str | None = None
    checkpoint: str | None = None
    responses_file: str | None = None
    api_key_env: str = "OPENAI_API_KEY"


@dataclasses.dataclass
class JudgeSpec:
    name: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_reasks: int = 5
    concurrency: int = 16


def run(
    bench: str,
    out: str | Path,
    model: ModelSpec,
    judge_spec: JudgeSpec,
    settings: RunSettings,
    bench_file: str | None = None,
    limit: int | None = None,
    baseline_file: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``bench``; returns the aggregated scores (also written to ``out``)."""
    from janus_jax.llm import LLMClient

    if bench not in JUDGED_BENCHES:
        raise ValueError(f"unknown benchmark {bench!r}; choose one of {', '.join(JUDGED_BENCHES)}")
    module = JUDGED_BENCHES[bench]
    out = Path(out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    loaded = load_benchmark("multifaceted" if bench == "pairwise" else bench, bench_file, limit)
    items = loaded.items
    problems: dict[str, list[str]] = {}
    if loaded.bad_rows:
        problems["bad_bench_rows"] = [f"{rid}: {why}" for rid, why in loaded.bad_rows]
    if bench == "pairwise":
        if baseline_file is None:
            raise ValueError("pairwise needs --baseline FILE (the baseline's answers, e.g. its responses.jsonl)")
        settings.baseline, baseline_problems = read_baseline(baseline_file, items)
        settings.baseline_name = Path(baseline_file).parent.name if Path(baseline_file).name == "responses.jsonl" \
            else Path(baseline_file).stem
        problems.update(baseline_problems)

    snapshots = module.item_snapshots(items)
    RowStore(out / "items.jsonl", ("id",)).rewrite(snapshots)

    responses = RowStore(out / "responses.jsonl", ("id",))
    started = time.time()
    gen_stats: dict[str, Any] = {}
    if model.responses_file:
        problems.update(import_responses(model.responses_file, items, responses, model.name))
    else:
        with _model_endpoint(model) as base_url:
            client = LLMClient(model.name, base_url, api_key_env=model.api_key_env,
                               max_concurrency=judge_spec.concurrency, cache_path=out / "cache" / "generation.jsonl")
            try:
                generate(client, responses, items, lambda it: module.generation_options(it, settings), model.name,
                         progress)
                gen_stats = client.stats.as_dict()
            finally:
                client.close()
    answers = answers_of({r["id"]: r for r in responses.values()})
    no_answer = [it.id for it in items if (responses.get((it.id,)) or {}).get("error")]
    if no_answer:
        problems["no_answer"] = no_answer

    judgments = RowStore(out / "judgments.jsonl", module.KEY_FIELDS)
    judge_client = LLMClient(judge_spec.name, judge_spec.base_url, api_key_env=judge_spec.api_key_env,
                             max_concurrency=judge_spec.concurrency, cache_path=out / "cache" / "judge.jsonl",
                             max_reasks=judge_spec.max_reasks)
    try:
        judge(judge_client, judgments, module.judge_jobs(items, answers, settings), module.TEMPLATE_HASH(),
              judge_spec.max_reasks, progress)
        judge_stats = judge_client.stats.as_dict()
    finally:
        judge_client.close()
        judgments.close()
        responses.close()

    run_info = {
        "benchmark": bench, "bench_file": bench_file, "limit": limit, "model": model.name,
        "model_base_url": model.base_url, "checkpoint": model.checkpoint, "responses_file": model.responses_file,
        "judge": judge_spec.name, "judge_base_url": judge_spec.base_url, "template_hash": module.TEMPLATE_HASH(),
        "parser_version": PARSER_VERSION, "settings": _settings_json(settings), "input_problems": problems,
        "generation_calls": gen_stats, "judge_calls": judge_stats, "finished": time.time(),
        "seconds": round(time.time() - started, 1),
    }
    write_json(out / "run.json", run_info)
    return score_dir(out)


def _settings_json(settings: RunSettings) -> dict[str, Any]:
    data = dataclasses.asdict(settings)
    data["baseline"] = {}  # the answers themselves are not settings
    return data


@contextlib.contextmanager
def _model_endpoint(model: ModelSpec):
    if model.checkpoint:
        from eval.serve_process import janus_serve

        with janus_serve(model.checkpoint, model.name) as base_url:
            yield base_url
    else:
        yield model.base_url


def import_responses(path: str, items: list[Item], store: RowStore, model_name: str) -> dict[str, list[str]]:
    """Answers from a file (``id`` + ``response``/``output``/``answers``); missing and unknown ids reported."""
    by_id = {it.id: it for it in items}
    seen = set()
    unknown = []
    for row_no, row in enumerate(read_records(path)):
        if "id" not in row:
            raise ValueError(f"{path}: row {row_no} has no 'id' field")
        rid = str(row["id"])
        if rid not in by_id:
            unknown.append(rid)
            continue
        answers = row.get("answers") or [row.get("response", row.get("output"))]
        answers = [a for a in answers if isinstance(a, str) and a.strip()]
        seen.add(rid)
        store.add({"id": rid, "model": model_name, "answers": answers, "sampling": {"from_file": path},
                   "error": None if answers else "empty answer in the responses file"})
    problems = {}
    missing = [it.id for it in items if it.id not in seen]
    if missing:
        problems["missing_responses"] = missing
    if unknown:
        problems["unknown_response_ids"] = unknown
    return problems


def read_baseline(path: str, items: list[Item]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Baseline answers by id; rows for other prompts (unknown id, or a ``prompt`` that differs) are reported."""
    by_id = {it.id: it for it in items}
    baseline, unknown, mismatched = {}, [], []
    for row_no, row in enumerate(read_records(path)):
        if "id" not in row:
            raise ValueError(f"{path}: row {row_no} has no 'id' field")
        rid = str(row["id"])
        answers = row.get("answers") or [row.get("response", row.get("output"))]
        if rid not in by_id:
            unknown.append(rid)
            continue
        if row.get("prompt") and normalize(row["prompt"]) != normalize(by_id[rid].prompt):
            mismatched.append(rid)
            continue
        if answers and isinstance(answers[0], str) and answers[0].strip():
            baseline[rid] = answers[0]
    problems = {}
    if unknown:
        problems["baseline_unknown_ids"] = unknown
    if mismatched:
        problems["baseline_other_prompt"] = mismatched
    missing = [it.id for it in items if it.id not in baseline and it.id not in mismatched]
    if missing:
        problems["baseline_missing"] = missing
    return baseline, problems


def in_item_order(snapshots: list[dict], judgments: list[dict], key_fields: tuple[str, ...]) -> list[dict]:
    """Judgments sorted by their item's place in the benchmark, then by key.

    Judge replies are stored as they arrive; statistics whose resampling or folds follow row order
    (AlpacaEval's LC fit picks its regularisation by cross-validation) must not depend on that order.
    """
    position = {row["id"]: i for i, row in enumerate(snapshots)}
    return sorted(judgments, key=lambda row: (position.get(row["id"], len(position)), row_key(row, key_fields)))


def score_dir(out: str | Path) -> dict[str, Any]:
    """Aggregate a run directory's stored judgments and write scores.json and the report."""
    out = Path(out)
    run_info = json.loads((out / "run.json").read_text())
    module = JUDGED_BENCHES[run_info["benchmark"]]
    settings = RunSettings(**run_info["settings"])
    snapshots = RowStore(out / "items.jsonl", ("id",))
    judgments = RowStore(out / "judgments.jsonl", module.KEY_FIELDS)
    try:
        ordered = in_item_order(snapshots.values(), judgments.values(), module.KEY_FIELDS)
        scores = module.aggregate(snapshots.values(), ordered, settings)
    finally:
        snapshots.close()
        judgments.close()
    scores["problems"] = {**run_info.get("input_problems", {}), **scores.get("problems", {})}
    scores.update(benchmark=run_info["benchmark"], model=run_info["model"], judge=run_info["judge"],
                  template_hash=run_info["template_hash"], parser_version=PARSER_VERSION,
                  level=settings.level, rounds=settings.rounds, seed=settings.seed)
    write_json(out / "scores.json", scores)
    write_report([out], out)
    return scores


def rescore(out: str | Path) -> tuple[dict[str, Any], int]:
    """Re-parse the stored raw judge replies with the current parser and re-aggregate; no LLM calls."""
    out = Path(out)
    run_info = json.loads((out / "run.json").read_text())
    module = JUDGED_BENCHES[run_info["benchmark"]]
    store = RowStore(out / "judgments.jsonl", module.KEY_FIELDS)
    rows, changed = rescore_rows(store.values())
    store.rewrite(rows)
    store.close()
    run_info["parser_version"] = PARSER_VERSION
    write_json(out / "run.json", run_info)
    return score_dir(out), changed
