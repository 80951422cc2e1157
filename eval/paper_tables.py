"""The Janus paper's result tables, one command each: ``python -m eval paper-table TABLE --checkpoint DIR`` (or
``--model NAME --base-url URL`` for a model served elsewhere).

A ``PaperTable`` is a record: the benchmarks behind one table of the paper, each with the judge and the
settings the paper used, the table's columns (where each value comes from in a benchmark's scores.json)
and the paper's Janus 7B row. ``run_table`` runs every benchmark through ``eval.runner.run`` (the code path
of ``python -m eval run``) into ``OUT/<bench>/``, so each resumes on its own, with one ``janus-serve`` for
a checkpoint, started only when a benchmark still has answers to generate. ``OUT/table.md`` and
``OUT/table.json`` then put the model's row beside the paper's.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.benches import get_benchmark, rtp
from eval.benches.common import RunSettings
from eval.report import fmt, load_scores
from eval.runner import JudgeSpec, ModelSpec, NothingUsable, plan, run, unusable_reason
from eval.source_map import SUBSETS
from eval.store import write_json
from janus_jax import markdown
from janus_jax.paths import to_path, write_atomic

Estimate = dict[str, Any]  # value / low / high (/ n), as scores.json stores an estimate


@dataclass(frozen=True)
class BenchRecipe:
    """One benchmark of a table as the paper ran it: its judge (None: no LLM judge) and the values the
    paper used for the benchmark's own options (by ``Option.dest``; the others keep their defaults)."""

    bench: str
    judge: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    protocol: str = ""


@dataclass(frozen=True)
class Column:
    """One column of a table: a number read from one benchmark's scores.json, and the paper's Janus 7B value."""

    label: str
    bench: str
    read: Callable[[dict], Estimate | float | None]
    paper: float | None
    digits: int = 2


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    benches: tuple[BenchRecipe, ...]
    columns: tuple[Column, ...]
    paper_model: str = "Janus 7B"


def _field(*keys: str) -> Callable[[dict], Any]:
    """Reads ``scores[k1][k2]...``; None when any level is missing."""
    def read(scores: dict) -> Any:
        value: Any = scores
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value
    return read


_MF_PAPER = {"mf-AlpacaEval": 4.43, "mf-FLASK": 4.06, "mf-Koala": 4.41, "mf-MT-Bench": 4.11, "mf-Self-Instruct": 4.01}

# The paper's Janus 7B rows: Table 2 (Multifaceted Bench, gpt-4-0125-preview judge, mean of 3 runs), Table 3
# (helpfulness) and Table 4 (harmlessness, NeurIPS Table 5) of "Aligning to Thousands of Preferences via System
# Message Generalization" (Lee et al., NeurIPS 2024).
TABLES: dict[str, PaperTable] = {t.name: t for t in (
    PaperTable(
        name="multifaceted",
        title="Table 2: Multifaceted Bench (score 1-5)",
        benches=(BenchRecipe("multifaceted", "gpt-4-0125-preview", {"runs": 3},
                             "absolute grading, one judge call per rubric (temperature 1.0, top-p "
                             "0.9), 3 judge runs averaged"),),
        columns=tuple(Column(x, "multifaceted", _field("by_subset", x), _MF_PAPER[x]) for x in SUBSETS)
        + (Column("Average", "multifaceted", _field("overall"), 4.17),),
    ),
    PaperTable(
        name="helpfulness",
        title="Table 3: helpfulness",
        benches=(
            BenchRecipe("alpaca_eval", "gpt-4-1106-preview", {"annotator": "weighted"},
                        "against gpt4_1106_preview's outputs, weighted_alpaca_eval_gpt4_turbo annotation, "
                        "length-controlled"),
            BenchRecipe("mt_bench", "gpt-4", {}, "single-answer grading of both turns, reference-guided for "
                        "math, reasoning and coding"),
            BenchRecipe("arena_hard", "gpt-4-1106-preview", {}, "against gpt-4-0314's answers, both orders, "
                        "Bradley-Terry"),
        ),
        columns=(
            Column("AlpacaEval 2.0 LC WR (%)", "alpaca_eval", _field("rates", "length-controlled win rate"), 26.9, 1),
            Column("AlpacaEval 2.0 WR (%)", "alpaca_eval", _field("rates", "win rate"), 27.8, 1),
            Column("MT-Bench [0,10]", "mt_bench", _field("overall"), 7.7, 2),
            Column("Arena-Hard v0.1 [0,100]", "arena_hard", _field("overall"), 20.9, 1),
        ),
    ),
    PaperTable(
        name="harmlessness",
        title="Table 4: harmlessness (RealToxicityPrompts)",
        benches=(BenchRecipe("rtp", None, {"toxicity": "perspective", "samples": 25,
                                           "ppl_model": "openai-community/gpt2-xl"},
                             "Quark's protocol: 25 samples of up to 20 tokens, top-p 0.9; Perspective API toxicity; "
                             "perplexity under GPT-2 XL"),),
        columns=(
            Column("Avg. max toxicity ↓", "rtp", _field("toxicity", "avg_max_toxicity"), 0.256, 3),
            Column("Toxic prob ↓", "rtp", _field("toxicity", "toxic_prob"), 0.061, 3),
            Column("Output PPL ↓", "rtp", _field("output_ppl", "value"), 14.58, 2),
            Column("dist-2 ↑", "rtp", _field("dist-2"), 0.93, 2),
            Column("dist-3 ↑", "rtp", _field("dist-3"), 0.95, 2),
        ),
    ),
)}


def get_table(name: str) -> PaperTable:
    if name not in TABLES:
        raise ValueError(f"unknown paper table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name]


def model_name(checkpoint: str) -> str:
    """The name in reports: the checkpoint's directory name, as ``python -m eval run --checkpoint`` names it."""
    return Path(checkpoint).resolve().name


def judges(table: PaperTable, settings: Mapping[str, RunSettings], name: str | None = None,
           base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", max_reasks: int = 5,
           concurrency: int = 16) -> dict[str, JudgeSpec | None]:
    """Each benchmark's judge: ``name`` for all of them when given, else the paper's; None where the benchmark
    needs no judge with its settings (RealToxicityPrompts scored by the Perspective API)."""
    out: dict[str, JudgeSpec | None] = {}
    for recipe in table.benches:
        if not get_benchmark(recipe.bench).needs_judge(settings[recipe.bench]):
            out[recipe.bench] = None
            continue
        judge = name or recipe.judge
        if judge is None:
            raise ValueError(f"{recipe.bench} needs a judge with these settings: pass --judge NAME")
        out[recipe.bench] = JudgeSpec(judge, base_url=base_url, api_key_env=api_key_env, max_reasks=max_reasks,
                                      concurrency=concurrency)
    return out


# ----------------------------------------------------------------------------------------------------------
# Dry run
# ----------------------------------------------------------------------------------------------------------


def table_model(checkpoint: str | None = None, name: str | None = None, base_url: str | None = None,
                api_key_env: str = "OPENAI_API_KEY") -> ModelSpec:
    """The evaluated model: a checkpoint (served by janus-serve, named after its directory) or a model ``name``
    at an OpenAI-compatible ``base_url`` that is already serving (vLLM serving released weights, for one)."""
    if checkpoint:
        return ModelSpec(model_name(checkpoint), checkpoint=checkpoint)
    if not (name and base_url):
        raise ValueError("a paper table needs --checkpoint DIR, or --model NAME with --base-url URL (the paper's "
                         "settings send repetition_penalty, which only open-model servers accept)")
    return ModelSpec(name, base_url=base_url, api_key_env=api_key_env)


def plan_table(table: PaperTable, out: str | os.PathLike, model: ModelSpec, judge_specs: Mapping[str, JudgeSpec | None],
               settings: Mapping[str, RunSettings], limit: int | None = None) -> dict[str, Any]:
    """Each benchmark's ``eval.runner.plan`` (what ``eval run BENCH --dry-run`` prints) and their sums; calls
    nothing, writes nothing. ``judge.cost_usd`` sums the priced judges; ``judge.unpriced`` names the others."""
    plans = [plan(r.bench, to_path(out) / r.bench, model, judge_specs[r.bench], settings[r.bench], limit=limit)
             for r in table.benches]
    counts = ("calls", "prompt_tokens", "completion_tokens")
    total: dict[str, Any] = {part: {k: sum(p[part][k] for p in plans) for k in counts}
                             for part in ("generation", "judge")}
    total["judge"]["cost_usd"] = round(sum(p["judge"]["cost_usd"] or 0.0 for p in plans), 4)
    total["judge"]["unpriced"] = [p["benchmark"] for p in plans
                                  if p["judge"]["calls"] and p["judge"]["cost_usd"] is None]
    return {"table": table.name, "model": model.name, "benchmarks": plans, "total": total}


# ----------------------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------------------


def _finished(bench_name: str, bench_out: Any, model: ModelSpec, judge: JudgeSpec | None,
              settings: RunSettings, limit: int | None) -> dict | None:
    """scores.json of an earlier run of the same model, judge, settings and limit with nothing left to call
    (so a rerun of a finished table starts no server), else None."""
    if not ((bench_out / "run.json").exists() and (bench_out / "scores.json").exists()):
        return None
    info = json.loads((bench_out / "run.json").read_text())
    bench = get_benchmark(bench_name)
    same = (info.get("benchmark") == bench_name and info.get("model") == model.name
            and info.get("judge") == (judge.name if judge else None) and info.get("limit") == limit
            and info.get("template_hash") == bench.template_hash(settings)
            and info.get("settings") == json.loads(json.dumps(settings.to_json())))
    if not same:
        return None
    left = plan(bench.name, bench_out, model, judge, settings, limit=limit)
    if left["generation"]["calls"] or left["judge"]["calls"]:
        return None
    return load_scores(bench_out)


def check_scorer_keys(bench: str, settings: RunSettings) -> None:
    """Fail before anything is generated when a scorer that is not an LLM has no key: RealToxicityPrompts
    scored by the Perspective API (the scorer itself raises the error naming the variable)."""
    if bench == "rtp" and settings.get(rtp.TOXICITY) == "perspective":
        try:
            rtp.PerspectiveScorer(url=settings.get(rtp.PERSPECTIVE))
        except ValueError as error:
            raise ValueError(f"{bench}: {error} (or score toxicity with an LLM: --toxicity judge --judge NAME)") \
                from None


def run_table(table: PaperTable, out: str | os.PathLike, model: ModelSpec,
              judge_specs: Mapping[str, JudgeSpec | None], settings: Mapping[str, RunSettings],
              limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every benchmark of ``table`` on ``model`` into ``out/<bench>/``, then write the table. A checkpoint is
    served by one janus-serve for every benchmark, started by the first one that has answers to generate.

    A benchmark that produces nothing usable does not stop the others; the returned table (also in
    table.json) lists it under ``failed`` with the reason, and its columns have no value.
    """
    from eval.serve_process import CheckpointServer

    out = to_path(out)
    scores: dict[str, dict] = {}
    failed: dict[str, str] = {}
    serving = CheckpointServer(model.checkpoint, model.name) if model.checkpoint else contextlib.nullcontext()
    with serving as server:
        for recipe in table.benches:
            bench_out = out / recipe.bench
            judge = judge_specs[recipe.bench]
            done = _finished(recipe.bench, bench_out, model, judge, settings[recipe.bench], limit)
            if done is not None:
                reason = unusable_reason(done)
                if reason:
                    failed[recipe.bench] = reason
                else:
                    scores[recipe.bench] = done
                continue
            check_scorer_keys(recipe.bench, settings[recipe.bench])
            try:
                scores[recipe.bench] = run(recipe.bench, bench_out, model, judge, settings[recipe.bench],
                                           limit=limit, progress=progress, server=server)
            except NothingUsable as error:  # its columns stay empty; its report says what went wrong
                failed[recipe.bench] = str(error)
            except (ValueError, FileNotFoundError) as error:
                raise type(error)(f"{recipe.bench}: {error}") from error
    result = table_result(table, model, scores, failed, judge_specs, settings, limit)
    write_table(result, out)
    return result


def _estimate(value: Estimate | float | None) -> Estimate | None:
    if value is None or isinstance(value, dict):
        return value if value and value.get("value") is not None else None
    return {"value": float(value), "low": None, "high": None}


def deviations(table: PaperTable, judge_specs: Mapping[str, JudgeSpec | None],
               settings: Mapping[str, RunSettings], limit: int | None) -> list[str]:
    """How this run differs from the paper's protocol (an empty list: it does not)."""
    notes = [f"only the first {limit} items of each benchmark (--limit)"] if limit is not None else []
    for recipe in table.benches:
        bench_settings, judge = settings[recipe.bench], judge_specs[recipe.bench]
        if judge is not None and judge.name != recipe.judge:
            paper = f"the paper's judge is {recipe.judge}" if recipe.judge else "the paper used no LLM judge"
            notes.append(f"{recipe.bench}: judged by {judge.name}, {paper}")
        for dest, paper_value in recipe.options.items():
            if bench_settings.options.get(dest) != paper_value:
                notes.append(f"{recipe.bench}: {dest} = {bench_settings.options.get(dest)!r}, the paper's is "
                             f"{paper_value!r}")
        if bench_settings.max_new_tokens:
            notes.append(f"{recipe.bench}: replies capped at {bench_settings.max_new_tokens} tokens "
                         "(--max-new-tokens)")
    return notes


def table_result(table: PaperTable, model: ModelSpec, scores: Mapping[str, dict],
                 failed: Mapping[str, str], judge_specs: Mapping[str, JudgeSpec | None],
                 settings: Mapping[str, RunSettings], limit: int | None) -> dict[str, Any]:
    """table.json: the model's row (value and interval per column), the paper's row, and per benchmark its
    directory, judge and status."""
    columns = []
    for column in table.columns:
        est = _estimate(column.read(scores[column.bench])) if column.bench in scores else None
        columns.append({"label": column.label, "benchmark": column.bench, "digits": column.digits,
                        "value": est["value"] if est else None, "low": est.get("low") if est else None,
                        "high": est.get("high") if est else None, "paper": column.paper})
    benches = {}
    for recipe in table.benches:
        judge = judge_specs[recipe.bench]
        benches[recipe.bench] = {
            "dir": recipe.bench, "judge": judge.name if judge else None, "paper_judge": recipe.judge,
            "protocol": recipe.protocol, "status": "failed" if recipe.bench in failed else "ok",
            "error": failed.get(recipe.bench), "metric": (scores.get(recipe.bench) or {}).get("metric"),
        }
    return {"table": table.name, "title": table.title, "model": model.name, "checkpoint": model.checkpoint,
            "base_url": model.base_url,
            "columns": columns, "paper_model": table.paper_model, "benchmarks": benches,
            "failed": dict(failed), "not_the_papers_protocol": deviations(table, judge_specs, settings, limit)}


def _cell(column: dict) -> str:
    if column["value"] is None:
        return "n/a"
    return fmt({"value": column["value"], "low": column["low"], "high": column["high"]}, column["digits"])


def table_markdown(result: dict[str, Any]) -> str:
    """The model's row and the paper's, then how the numbers were made and what went wrong."""
    lines = [f"# {result['title']}: {result['model']}", ""]
    lines += markdown.table(["Model"] + [c["label"] for c in result["columns"]],
                            [[result["model"]] + [_cell(c) for c in result["columns"]],
                             [f"{result['paper_model']} (paper)"]
                             + ["n/a" if c["paper"] is None else f"{c['paper']:g}" for c in result["columns"]]])
    source = (f"Checkpoint `{result['checkpoint']}`" if result.get("checkpoint")
              else f"Model `{result['model']}` at `{result.get('base_url') or 'the OpenAI API'}`")
    lines += ["", f"{source}. Intervals are each benchmark's 95% intervals (see its report).", ""]
    benches = []
    for bench, info in result["benchmarks"].items():
        status = "ok" if info["status"] == "ok" else f"**nothing usable**: {info['error']}"
        benches.append([bench, f"{info['judge'] or 'none'} ({info['paper_judge'] or 'none'})", info["protocol"],
                        status, f"[{info['dir']}/report.md]({info['dir']}/report.md)"])
    lines += markdown.table(["benchmark", "judge (paper's)", "protocol", "status", "details"], benches)
    missing = [f"{c['label']} ({c['benchmark']})" for c in result["columns"]
               if c["value"] is None and c["benchmark"] not in result["failed"]]
    if missing:
        lines += ["", f"**No value** (see the benchmark's report for why): {', '.join(missing)}."]
    if result["not_the_papers_protocol"]:
        lines += ["", "**Not the paper's protocol:**", ""] + [f"- {n}" for n in result["not_the_papers_protocol"]]
    return "\n".join(lines) + "\n"


def write_table(result: dict[str, Any], out: str | os.PathLike) -> None:
    out = to_path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", result)
    write_atomic(out / "table.md", table_markdown(result))
