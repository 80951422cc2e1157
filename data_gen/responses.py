"""Stage 4: the gold response to each instruction under each of its system messages."""

from __future__ import annotations

from typing import Any

from data_gen.prompt_templates import load_template
from data_gen.stage_runner import LLMTask

NAME = "responses"
TEMPLATE = load_template("gold_response", 1)
TYPICAL_COMPLETION_TOKENS = 800


def clean_response(text: str) -> str:
    cleaned = text.strip()
    if not cleaned:
        raise ValueError("the response is empty")
    return cleaned


def build_tasks(system_rows: list[dict[str, Any]], prompts: dict[str, str]) -> list[LLMTask]:
    options = {**TEMPLATE.sampling, "validate": clean_response, "accept_truncated": False}
    return [
        LLMTask(
            id=row["id"],
            instruction_id=row["instruction_id"],
            set_index=row["set_index"],
            messages=TEMPLATE.messages(system=row["system"], prompt=prompts[row["instruction_id"]]),
            options=options,
            build=lambda output: {"output": output},
        )
        for row in system_rows
    ]
