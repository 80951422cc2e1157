"""Arrow schemas of the released Multifaceted Collection / Bench datasets, column for column.

Why explicit schemas: ``datasets.load_dataset`` must give the same features for our files as for
``kaist-ai/Multifaceted-Collection*`` (struct fields in the order the released cards list them),
so training code cannot tell the two apart. Provenance (ids, template versions) lives in sidecar files,
never in extra columns.
"""

from __future__ import annotations

import pyarrow as pa

_str = pa.string()
PREFERENCE = pa.struct([("description", _str), ("dimension", _str), ("preference", _str), ("subdimension", _str)])
MESSAGE = pa.struct([("content", _str), ("role", _str)])
RUBRIC = pa.struct([("criteria", _str), ("score_descriptions", pa.struct([(s, _str) for s in "12345"]))])

SFT = pa.schema(
    [
        ("main_source", _str),
        ("original_source", _str),
        ("preference_set", pa.list_(PREFERENCE)),
        ("system", _str),
        ("prompt", _str),
        ("output", _str),
    ]
)
PAIRS = pa.schema(
    [
        ("main_source", _str),
        ("original_source", _str),
        ("system", _str),
        ("prompt", _str),
        ("chosen", pa.list_(MESSAGE)),
        ("rejected", pa.list_(MESSAGE)),
    ]
)
RM = pa.schema([("input", _str), ("chosen", _str), ("rejected", _str)])
BENCH = pa.schema(
    [
        ("source", _str),
        ("preference_set", pa.list_(PREFERENCE)),
        ("system", _str),
        ("prompt", _str),
        ("reference_answer", _str),
        ("rubrics", pa.list_(RUBRIC)),
    ]
)

# final split name -> schema (DPO and ORPO share one schema, as the released datasets do)
SPLIT_SCHEMAS: dict[str, pa.Schema] = {"sft": SFT, "small": SFT, "dpo": PAIRS, "orpo": PAIRS, "rm": RM, "bench": BENCH}
