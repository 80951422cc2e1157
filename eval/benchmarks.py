"""Loaders for every benchmark: one ``Item`` shape for the runner, with bad rows reported instead of dropped.

Shipped data lives in ``eval/data`` (see its SOURCES.md). Multifaceted Bench comes from the hub
(``kaist-ai/Multifaceted-Bench``) or a local JSON/JSONL/Parquet file with the same columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
MULTIFACETED_HUB_ID = "kaist-ai/Multifaceted-Bench"
BENCHMARKS = ("multifaceted", "alpaca_eval", "mt_bench", "arena_hard", "rtp")


@dataclass
class Item:
    """One thing to answer. ``turns`` has one user message except for MT-Bench (two)."""

    id: str
    turns: list[str]
    system: str = ""
    category: str = ""
    reference: list[str] = field(default_factory=list)  # reference answer per turn, when the bench has one
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.turns[0]


@dataclass
class Loaded:
    """Items plus the rows that could not be used, as ``(row id, reason)`` for the report."""

    items: list[Item]
    bad_rows: list[tuple[str, str]] = field(default_factory=list)


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file; a malformed line is an error naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    return rows


def read_records(path: str | Path) -> list[dict]:
    """Rows of a .json (list), .jsonl or .parquet file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows")
        return data
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    raise ValueError(f"{path}: unsupported file type (use .json, .jsonl or .parquet)")


# ----------------------------------------------------------------------------------------------------------
# Multifaceted Bench
# ----------------------------------------------------------------------------------------------------------


def load_multifaceted(source: str | None = None, limit: int | None = None) -> Loaded:
    """Multifaceted Bench rows; ids are row indices (the released set has no id column).

    ``source`` is a local file, or None / the hub id to download with ``datasets``. Rows without usable
    rubrics (``rubrics``, or the older ``rubric``) are reported, not evaluated.
    """
    if source is None or source == MULTIFACETED_HUB_ID:
        import datasets

        rows = [dict(r) for r in datasets.load_dataset(MULTIFACETED_HUB_ID, split="train")]
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


# ----------------------------------------------------------------------------------------------------------
# Helpfulness benchmarks
# ----------------------------------------------------------------------------------------------------------


def load_alpaca_eval() -> Loaded:
    """The 805 AlpacaEval 2.0 instructions; ``meta['baseline']`` is gpt4_1106_preview's output."""
    rows = json.loads((DATA_DIR / "alpaca_eval" / "gpt4_1106_preview_outputs.json").read_text())
    items = [
        Item(id=str(i), turns=[r["instruction"]], category=r.get("dataset", ""),
             meta={"baseline": r["output"], "baseline_name": r["generator"]})
        for i, r in enumerate(rows)
    ]
    return Loaded(items)


def alpaca_instructions() -> list[str]:
    return [item.prompt for item in load_alpaca_eval().items]


# FastChat's generation temperature per MT-Bench category (gen_model_answer.py).
MT_BENCH_TEMPERATURE = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
    "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0,
}
MT_BENCH_NEEDS_REFERENCE = ("math", "reasoning", "coding", "arena-hard-200")


def load_mt_bench() -> Loaded:
    """80 two-turn questions; math/reasoning/coding carry GPT-4 reference answers for the judge."""
    refs = {
        r["question_id"]: r["choices"][0]["turns"]
        for r in read_jsonl(DATA_DIR / "mt_bench" / "reference_answer_gpt-4.jsonl")
    }
    items, bad = [], []
    for row in read_jsonl(DATA_DIR / "mt_bench" / "question.jsonl"):
        qid = str(row["question_id"])
        reference = refs.get(row["question_id"], row.get("reference") or [])
        if row["category"] in MT_BENCH_NEEDS_REFERENCE and not reference:
            bad.append((qid, "reference answer missing for a reference-graded category"))
        items.append(Item(id=qid, turns=list(row["turns"]), category=row["category"], reference=list(reference)))
    return Loaded(items, bad)


def load_arena_hard() -> Loaded:
    """500 Arena-Hard-Auto v0.1 questions; ``meta['baseline']`` is gpt-4-0314's answer."""
    baseline = {
        r["question_id"]: r["choices"][0]["turns"][0]["content"]
        for r in read_jsonl(DATA_DIR / "arena_hard_v0.1" / "gpt-4-0314.jsonl")
    }
    items, bad = [], []
    for row in read_jsonl(DATA_DIR / "arena_hard_v0.1" / "question.jsonl"):
        qid = row["question_id"]
        if qid not in baseline:
            bad.append((qid, "no gpt-4-0314 baseline answer"))
            continue
        items.append(
            Item(id=qid, turns=[row["turns"][0]["content"]], category=row.get("cluster", ""),
                 meta={"baseline": baseline[qid], "baseline_name": "gpt-4-0314"})
        )
    return Loaded(items, bad)


def load_rtp(subset: str = "toxic", limit: int | None = None) -> Loaded:
    """RealToxicityPrompts sample (DecodingTrust's): ``toxic`` (challenging) or ``nontoxic``."""
    if subset not in ("toxic", "nontoxic"):
        raise ValueError(f"RealToxicityPrompts subset must be 'toxic' or 'nontoxic', got {subset!r}")
    rows = read_jsonl(DATA_DIR / "real_toxicity_prompts" / f"{subset}.jsonl")[:limit]
    items = [
        Item(id=f"{r['filename']}:{r['begin']}", turns=[r["prompt"]["text"]],
             meta={"prompt_toxicity": r["prompt"].get("toxicity")})
        for r in rows
    ]
    return Loaded(items)


def load_benchmark(name: str, bench_file: str | None = None, limit: int | None = None) -> Loaded:
    """Dispatch by benchmark name (see ``BENCHMARKS``)."""
    if name == "multifaceted":
        return load_multifaceted(bench_file, limit)
    loaders = {"alpaca_eval": load_alpaca_eval, "mt_bench": load_mt_bench, "arena_hard": load_arena_hard,
               "rtp": load_rtp}
    if name not in loaders:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    loaded = loaders[name]()
    if limit is not None:
        loaded.items = loaded.items[:limit]
    return loaded


def read_answers(path: str | Path, key: str = "id") -> dict[str, Any]:
    """Answers from an external file as ``{id: answer}``; JSONL rows with ``id`` and ``response``/``output``."""
    answers = {}
    for row in read_records(path):
        if key not in row:
            raise ValueError(f"{path}: a row has no {key!r} field")
        answers[str(row[key])] = row.get("response", row.get("output"))
    return answers
