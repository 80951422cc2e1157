"""Parsing model replies: JSON that may be wrapped in a code fence or in a sentence."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL | re.IGNORECASE)


def loads_json(text: str) -> Any:
    """The JSON value in a reply: the whole text, a ```json fence, or the outermost {...} span.

    Raises ValueError with the parser's position when there is none, so the reason says what was wrong.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    try:
        return json.loads(stripped)
    except ValueError as first_error:
        start, end = stripped.find("{"), stripped.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(stripped[start : end + 1])
            except ValueError:
                pass
        raise ValueError(f"the reply is not valid JSON ({first_error})") from None


def require_text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {key!r} is missing or not non-empty text")
    return value.strip()
