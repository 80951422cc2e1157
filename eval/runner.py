"""``run``, ``plan`` and ``rescore``: generate -> judge -> parse -> aggregate -> report, in one run directory,
for any benchmark of the registry (``eval.benches``).

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
import math
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from eval.benches import get_benchmark
from eval.benches.common import Benchmark, Item, RunSettings, answers_of, failure_reasons
from eval.engine import chat_messages, generate, judge, rescore_rows
from eval.parsing import PARSER_VERSION
from eval.report import write_report
from eval.store import RowStore, row_key, write_json
from janus_jax.jsonio import read_records
from janus_jax.paths import to_path

if TYPE_CHECKING:
    from eval.serve_process import CheckpointServer

log = logging.getLogger(__name__)



class NothingUsable(RuntimeError):
    """A run that produced no score: every call, judgment or row failed. The message says why."""


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


def _load(bench: Benchmark, settings: RunSettings, limit: int | None) -> tuple[list[Item], dict[str, list[str]]]:
    loaded = bench.load(settings, limit)
    problems = dict(loaded.problems)
    if loaded.bad_rows:
        problems["bad_bench_rows"] = [f"{rid}: {why}" for rid, why in loaded.bad_rows]
    return loaded.items, problems


def run(
    bench_name: str,
    out: str | os.PathLike,
    model: ModelSpec,
    judge_spec: JudgeSpec | None,
    settings: RunSettings,
    limit: int | None = None,
    progress: bool = True,
    server: CheckpointServer | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on a registered benchmark; returns the aggregated scores (also written to ``out``).

    A ``model.checkpoint`` is served by janus-serve only while answers are still missing (a rerun with only
    judge calls left starts none): by ``server`` when given (one server shared by several runs, as
    ``paper-table`` does), else by a janus-serve of this run. run.json records the checkpoint either way.
    Raises ``NothingUsable`` (after writing scores.json and the report) when the run produced no score.
    """
    from janus_jax.llm import LLMClient

    bench = get_benchmark(bench_name)
    if judge_spec is None and bench.needs_judge(settings):
        raise ValueError(f"{bench.name} needs a judge: pass --judge NAME")
    out = to_path(out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    items, problems = _load(bench, settings, limit)
    if not items:
        raise NothingUsable(f"{bench.name}: no usable item to evaluate ({_problem_counts(problems)})")
    RowStore(out / "items.jsonl", ("id",)).rewrite(bench.item_snapshots(items))

    responses = RowStore(out / "responses.jsonl", ("id",))
    started = time.time()
    gen_stats: dict[str, Any] = {}
    if model.responses_file:
        problems.update(import_responses(model.responses_file, items, responses, model.name))
    else:
        answered = answers_of({r["id"]: r for r in responses.values()})
        todo = [it for it in items if it.id not in answered]
        if todo:  # else no endpoint is needed (nor a janus-serve started)
            with _model_endpoint(model, server, samples_per_call(bench, settings, todo)) as (base_url, key_env):
                client = LLMClient(model.name, base_url, api_key_env=key_env,
                                   max_concurrency=judge_spec.concurrency if judge_spec else 16,
                                   cache_path=out / "cache" / "generation.jsonl")
                try:
                    generate(client, responses, items, lambda it: bench.generation_options(it, settings),
                             model.name, progress)
                    gen_stats = client.stats.as_dict()
                finally:
                    client.close()
    answers = answers_of({r["id"]: r for r in responses.values()})
    no_answer = [it.id for it in items if (responses.get((it.id,)) or {}).get("error")]
    if no_answer:
        problems["no_answer"] = no_answer

    judgments = RowStore(out / "judgments.jsonl", bench.key_fields)
    judge_stats: dict[str, Any] = {}
    try:
        jobs = bench.judge_jobs(items, answers, settings)
        if jobs:
            assert judge_spec is not None
            judge_client = LLMClient(judge_spec.name, judge_spec.base_url, api_key_env=judge_spec.api_key_env,
                                     max_concurrency=judge_spec.concurrency, cache_path=out / "cache" / "judge.jsonl",
                                     max_reasks=judge_spec.max_reasks)
            try:
                judge(judge_client, judgments, jobs, bench.parsers, bench.template_hash(settings),
                      judge_spec.max_reasks, progress)
                judge_stats = judge_client.stats.as_dict()
            finally:
                judge_client.close()
        if bench.score_without_llm:
            bench.score_without_llm(items, answers, settings, judgments)
    finally:
        judgments.close()
        responses.close()

    run_info = {
        "benchmark": bench.name, "limit": limit, "model": model.name,
        "model_base_url": model.base_url, "checkpoint": model.checkpoint, "responses_file": model.responses_file,
        "judge": judge_spec.name if judge_spec else None, "judge_base_url": judge_spec.base_url if judge_spec else None,
        "template_hash": bench.template_hash(settings), "parser_version": PARSER_VERSION,
        "settings": settings.to_json(), "input_problems": problems,
        "generation_calls": gen_stats, "judge_calls": judge_stats, "finished": time.time(),
        "seconds": round(time.time() - started, 1),
    }
    write_json(out / "run.json", run_info)
    scores = score_dir(out)
    reason = unusable_reason(scores)
    if reason:
        raise NothingUsable(reason)
    return scores


def samples_per_call(bench: Benchmark, settings: RunSettings, items: list[Item]) -> int:
    """The most answers (``n``) one generation request of these items asks for (RealToxicityPrompts: 25)."""
    return max((int(bench.generation_options(it, settings).get("n", 1)) for it in items), default=1)


@contextlib.contextmanager
def _model_endpoint(model: ModelSpec, server: CheckpointServer | None,
                    max_n: int) -> Iterator[tuple[str | None, str]]:
    """(base URL, API-key variable) of the evaluated model; a checkpoint is served by janus-serve meanwhile,
    admitting requests of ``max_n`` samples."""
    if not model.checkpoint:
        yield model.base_url, model.api_key_env
        return
    from eval.serve_process import SERVE_KEY_ENV, CheckpointServer

    if server is not None and server.checkpoint != str(model.checkpoint):
        raise ValueError(f"the server serves {server.checkpoint}, not the checkpoint {model.checkpoint} to evaluate")
    with contextlib.ExitStack() as own:
        if server is None:
            server = own.enter_context(CheckpointServer(model.checkpoint, model.name))
        yield server.base_url(max_n), SERVE_KEY_ENV


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


def in_item_order(snapshots: list[dict], judgments: list[dict], key_fields: tuple[str, ...]) -> list[dict]:
    """Judgments sorted by their item's place in the benchmark, then by key.

    Judge replies are stored as they arrive; statistics whose resampling or folds follow row order
    (AlpacaEval's LC fit picks its regularisation by cross-validation) must not depend on that order.
    """
    position = {row["id"]: i for i, row in enumerate(snapshots)}
    return sorted(judgments, key=lambda row: (position.get(row["id"], len(position)), row_key(row, key_fields)))


def score_dir(out: str | os.PathLike) -> dict[str, Any]:
    """Aggregate a run directory's stored judgments and write scores.json and the report."""
    out = to_path(out)
    run_info = json.loads((out / "run.json").read_text())
    bench = get_benchmark(run_info["benchmark"])
    settings = RunSettings.from_json(run_info["settings"])
    snapshots = RowStore(out / "items.jsonl", ("id",))
    judgments = RowStore(out / "judgments.jsonl", bench.key_fields)
    responses = RowStore(out / "responses.jsonl", ("id",))
    try:
        ordered = in_item_order(snapshots.values(), judgments.values(), bench.key_fields)
        scores = bench.aggregate(snapshots.values(), ordered, settings,
                                 responses={r["id"]: r for r in responses.values()})
        reasons = failure_reasons(judgments.values() + responses.values())
    finally:
        snapshots.close()
        judgments.close()
        responses.close()
    scores["problems"] = {**run_info.get("input_problems", {}), **scores.get("problems", {})}
    scores["failure_reasons"] = [{"reason": r, "count": n} for r, n in reasons]
    scores.update(benchmark=run_info["benchmark"], model=run_info["model"], judge=run_info["judge"],
                  template_hash=run_info["template_hash"], parser_version=PARSER_VERSION,
                  level=settings.level, rounds=settings.rounds, seed=settings.seed)
    write_json(out / "scores.json", scores)
    write_report([out], out)
    return scores


def unusable_reason(scores: dict[str, Any]) -> str | None:
    """Why a run's scores are not a result (no finite overall score), or None when they are."""
    overall = scores.get("overall") or {}
    value = overall.get("value")
    if value is not None and math.isfinite(value) and overall.get("n", 1) > 0:
        return None
    reasons = "; ".join(f"{r['count']}x {r['reason']}" for r in scores.get("failure_reasons", [])[:3])
    return (f"{scores['benchmark']}: no score: nothing was answered and judged successfully "
            f"({_problem_counts(scores.get('problems', {}))})" + (f"; top failures: {reasons}" if reasons else ""))


def _problem_counts(problems: dict[str, list]) -> str:
    return ", ".join(f"{kind} {len(ids)}" for kind, ids in problems.items()) or "no problem recorded"


def rescore(out: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Re-parse the stored raw judge replies with the current parser and re-aggregate; no LLM calls."""
    out = to_path(out)
    run_info = json.loads((out / "run.json").read_text())
    bench = get_benchmark(run_info["benchmark"])
    store = RowStore(out / "judgments.jsonl", bench.key_fields)
    rows, changed = rescore_rows(store.values(), bench.parsers)
    store.rewrite(rows)
    store.close()
    run_info["parser_version"] = PARSER_VERSION
    write_json(out / "run.json", run_info)
    return score_dir(out), changed


# ----------------------------------------------------------------------------------------------------------
# Dry run
# ----------------------------------------------------------------------------------------------------------


def _tokens(messages: list[dict[str, str]]) -> int:
    """About 4 characters per token, as ``data_gen run --dry-run`` estimates."""
    return sum(len(m["content"]) for m in messages) // 4 + 8


def plan(
    bench_name: str,
    out: str | os.PathLike,
    model: ModelSpec,
    judge_spec: JudgeSpec | None,
    settings: RunSettings,
    limit: int | None = None,
) -> dict[str, Any]:
    """The calls and estimated cost of a run, calling nothing and writing nothing.

    Rows already in ``out`` (a resumed run) are not counted. Answers not generated yet are assumed to use
    their whole ``max_tokens``, and every judge reply too, so the cost is an upper bound; re-asks of
    unreadable judge replies come on top.
    """
    from janus_jax.llm import price_for

    bench = get_benchmark(bench_name)
    out = to_path(out)
    items, problems = _load(bench, settings, limit)
    stored = RowStore(out / "responses.jsonl", ("id",)) if (out / "responses.jsonl").exists() else None
    done = answers_of({r["id"]: r for r in stored.values()}) if stored else {}
    if stored:
        stored.close()
    gen_calls = gen_prompt = gen_completion = 0
    answers: dict[str, list] = {}
    for it in items:
        options = bench.generation_options(it, settings)
        placeholder = "x" * 4 * int(options.get("max_tokens") or 1024)
        if it.id in done:
            answers[it.id] = done[it.id]
            continue
        if model.responses_file:
            answers[it.id] = [placeholder] * len(it.turns)
            continue
        for turn in range(len(it.turns)):
            gen_calls += 1
            gen_prompt += _tokens(chat_messages(it.system, it.turns[: turn + 1], [placeholder] * turn))
            gen_completion += int(options.get("max_tokens") or 1024) * int(options.get("n", 1))
        n = int(options.get("n", 1))
        answers[it.id] = [placeholder] * len(it.turns) if n == 1 else [[placeholder] * n]  # as generate stores
    judged = RowStore(out / "judgments.jsonl", bench.key_fields) if (out / "judgments.jsonl").exists() else None

    def pending(key: dict[str, Any]) -> bool:  # engine.judge's rule: not stored yet, or an API failure
        done = judged.get(tuple(str(v) for v in key.values())) if judged else None
        return done is None or done.get("error_kind") == "api"

    jobs = [job for job in bench.judge_jobs(items, answers, settings) if pending(job.key)]
    if judged:
        judged.close()
    judge_prompt = sum(_tokens(job.messages) for job in jobs)
    judge_completion = sum(int(job.options.get("max_tokens") or 1024) for job in jobs)

    def cost(name: str | None, prompt: int, completion: int) -> float | None:
        """None when the model has no price (local servers, unknown names)."""
        price = price_for(name) if name else None
        return None if price is None else round((prompt * price[0] + completion * price[1]) / 1e6, 4)

    return {
        "benchmark": bench.name, "items": len(items), "input_problems": _problem_counts(problems),
        "generation": {"model": model.name, "calls": gen_calls, "answered_before": len(done),
                       "prompt_tokens": gen_prompt, "completion_tokens": gen_completion,
                       "cost_usd": cost(None if model.checkpoint else model.name, gen_prompt, gen_completion)},
        "judge": {"model": judge_spec.name if judge_spec else None, "calls": len(jobs),
                  "prompt_tokens": judge_prompt, "completion_tokens": judge_completion,
                  "cost_usd": cost(judge_spec.name if judge_spec else None, judge_prompt, judge_completion)},
    }
