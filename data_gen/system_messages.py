"""Stage 3: one system message per preference set, written from the four descriptions only.

Only the descriptions go into the prompt (as for the released data), so the system message cannot
copy the keyword labels and must express the preferences in its own words.
"""

from __future__ import annotations

import re
from typing import Any

from data_gen.prompt_templates import load_template
from data_gen.stage_runner import LLMTask

NAME = "system_messages"
TEMPLATE = load_template("system_message", 1)
TYPICAL_COMPLETION_TOKENS = 250

_LABEL = re.compile(r"^\s*(?:\*\*)?system message(?:\*\*)?\s*:\s*", re.IGNORECASE)


def clean_system_message(text: str) -> str:
    """Strip a leading "System message:" label and wrapping quotes; reject what is left if empty."""
    cleaned = _LABEL.sub("", text.strip()).strip()
    if len(cleaned) >= 2 and cleaned[0] == cleaned[-1] and cleaned[0] in "\"'":
        cleaned = cleaned[1:-1].strip()
    if not cleaned:
        raise ValueError("the system message is empty")
    return cleaned


def build_tasks(preference_rows: list[dict[str, Any]]) -> list[LLMTask]:
    options = {**TEMPLATE.sampling, "validate": clean_system_message, "accept_truncated": False}
    tasks = []
    for row in preference_rows:
        for k, preference_set in enumerate(row["preference_sets"]):
            descriptions = "\n".join(f"- {p['description']}" for p in preference_set)
            tasks.append(
                LLMTask(
                    id=f"{row['instruction_id']}/{k}",
                    instruction_id=row["instruction_id"],
                    set_index=k,
                    messages=TEMPLATE.messages(descriptions=descriptions),
                    options=options,
                    build=lambda system: {"system": system},
                )
            )
    return tasks
