"""Stage 5 (optional): one Multifaceted-Bench-style score rubric per preference.

Uses the Janus evaluation code's rubric prompt verbatim, with three example rubrics from the other
three dimensions (so the model sees the shape without a template for its own dimension).
"""

from __future__ import annotations

import json
from typing import Any

from data_gen.preference_sets import DIMENSIONS
from data_gen.prompt_templates import load_data, load_template
from data_gen.replies import loads_json, require_text
from data_gen.stage_runner import LLMTask

NAME = "rubrics"
TEMPLATE = load_template("rubric", 1)
TYPICAL_COMPLETION_TOKENS = 350
SCORES = ("1", "2", "3", "4", "5")


def parse_rubric(text: str) -> dict[str, Any]:
    """``{"criteria": str, "score_descriptions": {"1".."5": str}}`` or ValueError saying what is missing."""
    data = loads_json(text)
    if isinstance(data, dict) and "criteria" not in data and len(data) == 1:
        (inner,) = data.values()  # {"rubric": {...}}
        data = inner
    if not isinstance(data, dict):
        raise ValueError("the rubric is not a JSON object")
    criteria = require_text(data, "criteria", "rubric")
    scores = data.get("score_descriptions")
    if not isinstance(scores, dict):
        raise ValueError("rubric: 'score_descriptions' is missing or not an object")
    missing = [s for s in SCORES if not isinstance(scores.get(s), str) or not scores[s].strip()]
    if missing:
        raise ValueError(f"rubric: score_descriptions lacks text for score(s) {', '.join(missing)}")
    return {"criteria": criteria, "score_descriptions": {s: scores[s].strip() for s in SCORES}}


def example_rubrics(dimension: str) -> dict[str, str]:
    examples = [e["rubric"] for e in load_data("rubric_examples.json")["rubrics"] if e["dimension"] != dimension]
    return {f"example_{i + 1}": json.dumps(rubric, indent=4) for i, rubric in enumerate(examples[:3])}


def build_tasks(preference_rows: list[dict[str, Any]], available_sets: set[tuple[str, int]]) -> list[LLMTask]:
    """Rubric tasks for every preference of the sets in ``available_sets`` ((instruction_id, set_index))."""
    options = {**TEMPLATE.sampling, "validate": parse_rubric, "accept_truncated": False}
    tasks = []
    for row in preference_rows:
        for k, preference_set in enumerate(row["preference_sets"]):
            if (row["instruction_id"], k) not in available_sets:
                continue
            for preference in preference_set:
                dimension = preference["dimension"]
                assert dimension in DIMENSIONS
                messages = TEMPLATE.messages(preference=json.dumps(preference, indent=4), **example_rubrics(dimension))
                tasks.append(
                    LLMTask(
                        id=f"{row['instruction_id']}/{k}/{dimension}",
                        instruction_id=row["instruction_id"],
                        set_index=k,
                        messages=messages,
                        options=options,
                        build=lambda rubric, d=dimension: {"dimension": d, "rubric": rubric},
                    )
                )
    return tasks
