"""Which original benchmark a Multifaceted Bench prompt came from (mf-AlpacaEval, mf-FLASK, ...).

The bench's ``source`` column is fine-grained (FLASK alone has 122 sub-dataset names) and the five
benchmarks overlap (AlpacaEval and FLASK both contain Koala and Self-Instruct prompts), so the prompt is
matched against the original files, and the ``source`` column only breaks ties. Ambiguous and unmatched
items are returned with their ids for the report.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from eval import DATA_DIR
from janus_jax.jsonio import read_jsonl

SUBSETS = ("mf-AlpacaEval", "mf-FLASK", "mf-Koala", "mf-MT-Bench", "mf-Self-Instruct")
UNMAPPED = "unmapped"
# Order used when neither the prompt nor the source column decides.
_PRIORITY = ("mf-MT-Bench", "mf-Koala", "mf-Self-Instruct", "mf-AlpacaEval", "mf-FLASK")
_CANONICAL = {
    "alpacaeval": "mf-AlpacaEval", "alpacaeval20": "mf-AlpacaEval", "flask": "mf-FLASK", "koala": "mf-Koala",
    "mtbench": "mf-MT-Bench", "selfinstruct": "mf-Self-Instruct",
}


def normalize(text: str) -> str:
    """Case, whitespace and escaped-newline insensitive form used for matching."""
    text = text.replace("\\n", "\n").replace("\\t", "\t")
    return " ".join(text.lower().split())


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@lru_cache(maxsize=1)
def benchmark_prompts() -> dict[str, dict[str, str]]:
    """``{subset: {normalized prompt: original prompt}}`` from the shipped source files."""
    out: dict[str, dict[str, str]] = {s: {} for s in SUBSETS}
    alpaca = json.loads((DATA_DIR / "alpaca_eval" / "gpt4_1106_preview_outputs.json").read_text())
    for r in alpaca:
        out["mf-AlpacaEval"][normalize(r["instruction"])] = r["instruction"]
    for r in read_jsonl(DATA_DIR / "sources" / "flask_evaluation.jsonl"):
        out["mf-FLASK"][normalize(r["instruction"])] = r["instruction"]
    for r in read_jsonl(DATA_DIR / "sources" / "koala_test_set.jsonl"):
        out["mf-Koala"][normalize(r["prompt"])] = r["prompt"]
    for r in read_jsonl(DATA_DIR / "mt_bench" / "question.jsonl"):
        out["mf-MT-Bench"][normalize(r["turns"][0])] = r["turns"][0]
    for r in read_jsonl(DATA_DIR / "sources" / "user_oriented_instructions.jsonl"):
        for prompt in self_instruct_prompts(r):
            out["mf-Self-Instruct"][normalize(prompt)] = prompt
    return out


def self_instruct_prompts(row: dict) -> list[str]:
    """Self-Instruct tasks become one prompt per instance: instruction, then the input if any."""
    prompts = []
    for inst in row.get("instances") or [{"input": ""}]:
        text = row["instruction"] if not inst.get("input") else f"{row['instruction']}\n{inst['input']}"
        prompts.append(text)
    return prompts


@lru_cache(maxsize=1)
def _flask_tasks() -> frozenset[str]:
    return frozenset(_key(r["task"]) for r in read_jsonl(DATA_DIR / "sources" / "flask_evaluation.jsonl"))


@dataclass
class SourceMapping:
    subset_of: dict[str, str]  # item id -> subset (or "unmapped")
    ambiguous: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)


def map_sources(items: list[tuple[str, str, str]]) -> SourceMapping:
    """Map ``(item id, prompt, source column)`` triples to subsets.

    1. exact match of the normalized prompt in one benchmark: that one;
    2. several: a ``source`` naming one of them ("Koala", "mt_bench", ...) decides; a FLASK-only sub-dataset
       name picks FLASK; otherwise a fixed priority, and the item is listed as ambiguous;
    3. no exact match: a prompt that contains (or is contained in) a benchmark prompt of >= 40 characters,
       then the ``source`` column alone; else "unmapped".
    """
    prompts = benchmark_prompts()
    flask_tasks = _flask_tasks()
    result = SourceMapping({})
    for item_id, prompt, source in items:
        norm = normalize(prompt)
        candidates = [s for s in SUBSETS if norm in prompts[s]]
        if not candidates:
            candidates = [
                s for s in SUBSETS
                if any(len(p) >= 40 and (p in norm or norm in p) for p in prompts[s])
            ] if len(norm) >= 40 else []
        source_key = _key(source or "")
        named = _CANONICAL.get(source_key)
        if len(candidates) == 1:
            subset = candidates[0]
        elif candidates:
            if named in candidates:
                subset = named
            elif "mf-FLASK" in candidates and source_key in flask_tasks:
                subset = "mf-FLASK"
            else:
                subset = next(s for s in _PRIORITY if s in candidates)
                result.ambiguous.append(item_id)
        elif named:
            subset = named
        elif source_key in flask_tasks:
            subset = "mf-FLASK"
        else:
            subset = UNMAPPED
            result.unmapped.append(item_id)
        result.subset_of[item_id] = subset
    return result
