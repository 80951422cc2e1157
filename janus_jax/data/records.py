"""Validate raw rows of the three Multifaceted Collection training schemas into uniform records.

Schemas (as released on the Hugging Face hub):
  sft: main_source, original_source, preference_set, system, prompt, output
  dpo: main_source, original_source, system, prompt, chosen[{content, role}], rejected[{content, role}]
       (also the ORPO schema; the response is the content of the last message with role "assistant")
  rm:  input (= system + "\\n" + prompt), chosen, rejected
Only the fields training needs are checked. A bad row is reported with its index and reason and left out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from janus_jax.data.report import (
    CHOSEN_EQUALS_REJECTED,
    EMPTY_FIELD,
    MISSING_FIELD,
    NO_ASSISTANT_MESSAGE,
    WRONG_TYPE,
    DataReport,
)
from janus_jax.prompts import prompt_text, rm_prompt_text

FORMATS = ("sft", "dpo", "rm")


@dataclass(frozen=True)
class Example:
    """One SFT example. `instruction` groups the rows that share a user prompt."""

    row: int
    instruction: str
    system: str
    prompt: str
    response: str

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.system, self.prompt)


@dataclass(frozen=True)
class Pair:
    """One preference pair; `prompt_text` is the rendered `[INST] ... [/INST]` part shared by both sides.

    `system` and `prompt` are kept for DPO-schema rows (None for RM rows, whose `input` joins the two), so a
    system-message policy can re-render `prompt_text`.
    """

    row: int
    instruction: str
    prompt_text: str
    chosen: str
    rejected: str
    system: str | None = None
    prompt: str | None = None


def detect_format(rows: list[dict | None]) -> str:
    """The schema of `rows`, from the fields of the first readable row."""
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is None:
        raise ValueError("cannot detect the data format: no readable row")
    if "output" in first:
        return "sft"
    if "input" in first:
        return "rm"
    if "chosen" in first:
        return "dpo"
    raise ValueError(
        f"cannot detect the data format from fields {sorted(first)}: expected 'output' (sft), "
        "'chosen'/'rejected' lists with 'system'/'prompt' (dpo) or 'input' (rm); set data.format"
    )


class _Bad(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _text(row: dict, key: str, *, allow_empty: bool = False) -> str:
    if key not in row or row[key] is None:
        raise _Bad(MISSING_FIELD, f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise _Bad(WRONG_TYPE, f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _Bad(EMPTY_FIELD, f"field {key!r} is empty")
    return value


def _assistant_content(row: dict, key: str) -> str:
    if key not in row or row[key] is None:
        raise _Bad(MISSING_FIELD, f"missing field {key!r}")
    messages = row[key]
    if isinstance(messages, str):
        raise _Bad(WRONG_TYPE, f"field {key!r} must be a list of {{content, role}} messages, got a string "
                               "(RM-schema rows need data.format='rm')")
    if not isinstance(messages, list):
        raise _Bad(WRONG_TYPE, f"field {key!r} must be a list of messages, got {type(messages).__name__}")
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if not isinstance(m, dict):
            raise _Bad(WRONG_TYPE, f"{key}[{i}] must be a {{content, role}} object, got {type(m).__name__}")
        if m.get("role") == "assistant":
            try:
                return _text(m, "content")
            except _Bad as e:
                raise _Bad(e.kind, f"{key}[{i}]: {e.detail}") from None
    raise _Bad(NO_ASSISTANT_MESSAGE, f"field {key!r} has no message with role 'assistant'")


def _sft(row: dict, index: int) -> Example:
    system = _text(row, "system", allow_empty=True)
    prompt = _text(row, "prompt")
    return Example(index, prompt, system, prompt, _text(row, "output"))


def _pair(row: dict, index: int, fmt: str) -> Pair:
    system = prompt = None
    if fmt == "dpo":
        system = _text(row, "system", allow_empty=True)
        prompt = _text(row, "prompt")
        instruction, text = prompt, prompt_text(system, prompt)
        chosen, rejected = _assistant_content(row, "chosen"), _assistant_content(row, "rejected")
    else:
        rm_input = _text(row, "input")
        instruction, text = rm_input, rm_prompt_text(rm_input)
        chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    if chosen == rejected:
        raise _Bad(CHOSEN_EQUALS_REJECTED, "chosen and rejected responses are identical")
    return Pair(index, instruction, text, chosen, rejected, system, prompt)


SYSTEM_MESSAGE_POLICIES = ("as_is", "generic", "none")


def with_system_message(record: Example | Pair, system: str) -> Example | Pair:
    """The record with its system message replaced (the prompt text of a pair is rendered again)."""
    if isinstance(record, Example):
        return replace(record, system=system)
    if record.prompt is None:
        raise ValueError(f"row {record.row}: RM-schema rows join system and prompt in `input`, so their system "
                         "message cannot be replaced; use data.system_message_policy='as_is'")
    return replace(record, system=system, prompt_text=prompt_text(system, record.prompt))


def validate(rows: list[dict | None], fmt: str, report: DataReport, split: str) -> list[Example] | list[Pair]:
    """Records for the valid rows; every other row is added to `report` with its index and reason.

    Rows that failed to parse upstream arrive as None (already reported) and are skipped here.
    """
    if fmt not in FORMATS:
        raise ValueError(f"data.format must be one of {FORMATS} (or '' to detect), got {fmt!r}")
    out = []
    for index, row in enumerate(rows):
        if row is None:
            continue
        try:
            if not isinstance(row, dict):
                raise _Bad(WRONG_TYPE, f"row must be an object, got {type(row).__name__}")
            out.append(_sft(row, index) if fmt == "sft" else _pair(row, index, fmt))
        except _Bad as e:
            report.add(split, index, e.kind, e.detail)
    return out
