"""Stage 2: three preference sets per instruction, one preference per dimension, as validated JSON."""

from __future__ import annotations

import json
import random
from typing import Any

from data_gen.prompt_templates import load_data, load_template
from data_gen.replies import loads_json, require_text
from data_gen.stage_runner import LLMTask

NAME = "preference_sets"
TEMPLATE = load_template("preference_sets", 1)
DIMENSIONS = ("style", "background_knowledge", "informativeness", "harmlessness")
SETS_PER_INSTRUCTION = 3
TYPICAL_COMPLETION_TOKENS = 1300  # for cost estimates: 12 preferences of ~100 tokens plus JSON


def _dimension(value: str) -> str:
    return "_".join(value.strip().lower().replace("-", " ").split())


def parse_preference_set(items: Any, where: str) -> list[dict[str, str]]:
    """Four preferences in the canonical dimension order, or ValueError naming what is wrong."""
    if not isinstance(items, list):
        raise ValueError(f"{where} is not a list of preferences")
    by_dimension: dict[str, dict[str, str]] = {}
    for j, item in enumerate(items):
        spot = f"{where}, preference {j + 1}"
        if not isinstance(item, dict):
            raise ValueError(f"{spot} is not an object")
        dimension = _dimension(require_text(item, "dimension", spot))
        if dimension not in DIMENSIONS:
            raise ValueError(f"{spot}: unknown dimension {dimension!r} (expected one of {', '.join(DIMENSIONS)})")
        if dimension in by_dimension:
            raise ValueError(f"{where}: dimension {dimension!r} appears twice")
        by_dimension[dimension] = {
            "dimension": dimension,
            "subdimension": require_text(item, "subdimension", spot).lower(),
            "preference": require_text(item, "preference", spot),
            "description": require_text(item, "description", spot),
        }
    missing = [d for d in DIMENSIONS if d not in by_dimension]
    if missing:
        raise ValueError(f"{where} misses the dimension(s) {', '.join(missing)}")
    return [by_dimension[d] for d in DIMENSIONS]


def parse_preference_sets(text: str) -> list[list[dict[str, str]]]:
    data = loads_json(text)
    sets = data.get("preference_sets") if isinstance(data, dict) else data
    if not isinstance(sets, list):
        raise ValueError('expected {"preference_sets": [set, set, set]}')
    if len(sets) != SETS_PER_INSTRUCTION:
        raise ValueError(f"expected {SETS_PER_INSTRUCTION} preference sets, got {len(sets)}")
    return [parse_preference_set(s, f"set {i + 1}") for i, s in enumerate(sets)]


def seed_examples(instruction_id: str, seed: int) -> str:
    """Two keyword examples per dimension, drawn per instruction (reproducibly) to vary the prompts."""
    keywords = load_data("seed_preferences.json")["keywords"]
    rng = random.Random(f"{seed}:{instruction_id}:seed_examples")
    lines = []
    for dimension in DIMENSIONS:
        for subdimension in rng.sample(sorted(keywords[dimension]), 2):
            lines.append(f'- {dimension} / {subdimension}: "{rng.choice(keywords[dimension][subdimension])}"')
    return "\n".join(lines)


def worked_example() -> str:
    example = load_data("seed_preferences.json")["worked_example"]
    return f"Instruction: {example['instruction']}\nPreference set: {json.dumps(example['preference_set'])}"


def build_tasks(instructions: list[dict[str, Any]], seed: int) -> list[LLMTask]:
    options = {**TEMPLATE.sampling, "validate": parse_preference_sets, "accept_truncated": False}
    return [
        LLMTask(
            id=row["id"],
            instruction_id=row["id"],
            set_index=None,
            messages=TEMPLATE.messages(
                instruction=row["prompt"], seed_examples=seed_examples(row["id"], seed), worked_example=worked_example()
            ),
            options=options,
            build=lambda sets: {"preference_sets": sets},
        )
        for row in instructions
    ]
