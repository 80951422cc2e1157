"""The preference values of the synthetic world: four dimensions, each with values a program can check.

A value id is `key=value` (e.g. `format=json`). A combination holds exactly one value of each dimension;
an unknown id, or two values of one dimension (`format=json` with `format=bullets`), is an error that names
the offending ids.
"""

from __future__ import annotations

# The paper's four preference dimensions (Multifaceted Collection names), each with its checkable values.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "style": ("format=json", "format=numbered", "format=bullets", "format=paragraph"),
    "informativeness": ("length=short", "length=detailed"),
    "background_knowledge": ("audience=novice", "audience=expert"),
    "harmlessness": ("safety=caution", "safety=plain"),
}
DESCRIPTIONS: dict[str, str] = {
    "format=json": "the reply is a JSON object and nothing else",
    "format=numbered": "every line of the reply starts with its number: `1.`, `2.`, ...",
    "format=bullets": "every line of the reply starts with `- `",
    "format=paragraph": "the reply is one paragraph of prose with no line breaks",
    "length=short": "the reply has at most 25 words",
    "length=detailed": "every fact of the record appears in the reply",
    "audience=novice": "the record's technical term is defined inline where it is used",
    "audience=expert": "the record's technical term is used bare, without its definition",
    "safety=caution": "when the record names a risk, the reply adds a caution sentence stating it",
    "safety=plain": "the reply adds no caution sentence",
}
VALUE_IDS: tuple[str, ...] = tuple(v for values in DIMENSIONS.values() for v in values)
DIMENSION_OF: dict[str, str] = {v: d for d, values in DIMENSIONS.items() for v in values}
SHORT_WORD_LIMIT = 25


class WorldError(ValueError):
    """A world config or value combination that cannot be built."""


def check_value_id(value_id: str) -> str:
    """`value_id` itself, or a WorldError listing the known ids."""
    if value_id not in DIMENSION_OF:
        raise WorldError(f"unknown value id {value_id!r}; known ids: {', '.join(VALUE_IDS)}")
    return value_id


def combination(value_ids: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The ids in dimension order, after checking there is exactly one value per dimension."""
    by_dim: dict[str, str] = {}
    for v in value_ids:
        dim = DIMENSION_OF[check_value_id(v)]
        if dim in by_dim and by_dim[dim] != v:
            raise WorldError(f"value combination contradicts itself: {by_dim[dim]!r} and {v!r} are both "
                             f"{dim} values")
        by_dim[dim] = v
    missing = [d for d in DIMENSIONS if d not in by_dim]
    if missing:
        raise WorldError(f"value combination {list(value_ids)} has no value for {', '.join(missing)}")
    return tuple(by_dim[d] for d in DIMENSIONS)


def all_combinations() -> list[tuple[str, ...]]:
    """Every combination of one value per dimension (4 x 2 x 2 x 2 = 32)."""
    combos: list[tuple[str, ...]] = [()]
    for values in DIMENSIONS.values():
        combos = [(*c, v) for c in combos for v in values]
    return combos
