"""Markdown tables: the one writer of them (eval reports and paper tables, sweep results, the repro report)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines. A `|` inside a cell is escaped, so that a cell (a model name, an error) stays
    one cell."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(row) for row in rows)]
