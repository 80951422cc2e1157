"""Independent checks of the value ids over a reply: does the reply satisfy `format=json`, `length=short`, ...?

Written apart from the rule-based judge (eval/rule_judge.py) on purpose: the report cross-checks the judge's
scores against these booleans, so the two must not share code.
"""

from __future__ import annotations

import json
import re

from data_gen.world.records import FACT_KEYS, Record
from data_gen.world.values import SHORT_WORD_LIMIT, check_value_id

_NUMBERED = re.compile(r"^(\d+)\. \S")


def word_count(text: str) -> int:
    """Whitespace-separated tokens that hold a letter or digit (a lone `-` bullet is not a word)."""
    return sum(1 for t in text.split() if any(ch.isalnum() for ch in t))


def _lines(reply: str) -> list[str]:
    return [line for line in reply.strip().split("\n") if line.strip()]


def _is_json_object(reply: str) -> bool:
    try:
        return isinstance(json.loads(reply), dict)
    except json.JSONDecodeError:
        return False


def _numbered(reply: str) -> bool:
    lines = _lines(reply)
    numbers = [_NUMBERED.match(line) for line in lines]
    return bool(lines) and all(numbers) and [int(m.group(1)) for m in numbers] == list(range(1, len(lines) + 1))


def _has_caution(reply: str) -> bool:
    return "caution" in reply.lower()


def satisfies(value_id: str, reply: str, record: Record) -> bool:
    """Whether `reply` (to `record`'s prompt) satisfies the preference `value_id`; an empty reply satisfies none."""
    check_value_id(value_id)
    text = reply.strip()
    if not text:
        return False
    low = text.lower()
    if value_id == "format=json":
        return _is_json_object(text)
    if value_id == "format=numbered":
        return _numbered(text)
    if value_id == "format=bullets":
        lines = _lines(text)
        return bool(lines) and all(line.startswith("- ") for line in lines)
    if value_id == "format=paragraph":
        return bool(text) and "\n" not in text and not text.startswith(("- ", "{")) and not _NUMBERED.match(text)
    if value_id == "length=short":
        return 0 < word_count(text) <= SHORT_WORD_LIMIT
    if value_id == "length=detailed":
        return all(getattr(record, k).lower() in low for k in FACT_KEYS)
    if value_id == "audience=novice":
        return record.definition.lower() in low
    if value_id == "audience=expert":
        return record.term.lower() in low and record.definition.lower() not in low
    if value_id == "safety=caution":
        return (_has_caution(text) and record.risk.lower() in low) if record.risky else not _has_caution(text)
    return not _has_caution(text)  # safety=plain
