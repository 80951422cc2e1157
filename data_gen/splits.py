"""Stage 6: assemble the training splits and the bench from the stage files (no LLM calls).

- sft: every (instruction, preference set) with a gold response (all three per instruction).
- small: one of them per instruction.
- dpo / orpo: per instruction, chosen = the response to its own system message, rejected = a response
  written for another system message of the same instruction; messages in the Argilla layout
  ``[{"content": prompt, "role": "user"}, {"content": response, "role": "assistant"}]``.
- rm: ``input`` = system + "\n" + prompt, with the same chosen/rejected responses as text.
- bench: one rubric per preference, in the Multifaceted Bench layout (needs the rubrics stage).

Choices are random but reproducible: one RNG per instruction seeded by (seed, instruction id), and the
small split uses the same set as the DPO/ORPO/RM "chosen" one. Parquet files go to
``final/<split>/train.parquet``, which ``datasets.load_dataset("<out>/final/<split>")`` opens (a split
without rows gets no file: datasets cannot read an empty parquet file). A row-aligned
``final/provenance/<split>.jsonl`` names each row's instruction, set(s) and template versions.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from etils import epath

from data_gen.schemas import SPLIT_SCHEMAS
from janus_jax.jsonio import write_jsonl_atomic
from janus_jax.paths import write_atomic


@dataclass
class SplitReport:
    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs_skipped: int = 0  # instructions with fewer than two responses: no pair possible


def _write_parquet(path: epath.Path, rows: list[dict[str, Any]], schema: pa.Schema) -> str:
    """Write the split whole (`janus_jax.paths.write_atomic`: local or gs://); returns its sha256."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    data = buffer.getvalue()
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _messages(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"content": prompt, "role": "user"}, {"content": response, "role": "assistant"}]


def build_splits(
    instructions: list[dict[str, Any]],
    preference_rows: dict[str, dict[str, Any]],
    system_rows: dict[str, dict[str, Any]],
    response_rows: dict[str, dict[str, Any]],
    rubric_rows: dict[str, dict[str, Any]] | None,
    out_dir: epath.Path,
    seed: int,
) -> SplitReport:
    """Write every split; ``rubric_rows=None`` means the rubrics stage was not run (no bench split)."""
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLIT_SCHEMAS}
    provenance: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLIT_SCHEMAS}
    report = SplitReport()
    for instruction in instructions:
        iid = instruction["id"]
        preferences = preference_rows.get(iid)
        if preferences is None:
            continue
        sets = []  # (k, preference_set, system, output, templates)
        for k, preference_set in enumerate(preferences["preference_sets"]):
            system = system_rows.get(f"{iid}/{k}")
            response = response_rows.get(f"{iid}/{k}")
            if system is None or response is None:
                continue
            templates = [preferences["template"], system["template"], response["template"]]
            sets.append((k, preference_set, system["system"], response["output"], templates))
        if not sets:
            continue
        common = {"main_source": instruction["main_source"], "original_source": instruction["original_source"]}
        prompt = instruction["prompt"]
        for k, preference_set, system, output, templates in sets:
            splits["sft"].append(
                {**common, "preference_set": preference_set, "system": system, "prompt": prompt, "output": output}
            )
            provenance["sft"].append({"instruction_id": iid, "set_index": k, "templates": templates})
            if rubric_rows is not None:
                rubrics = [rubric_rows.get(f"{iid}/{k}/{p['dimension']}") for p in preference_set]
                if all(r is not None for r in rubrics):
                    splits["bench"].append(
                        {
                            "source": instruction["original_source"],
                            "preference_set": preference_set,
                            "system": system,
                            "prompt": prompt,
                            "reference_answer": output,
                            "rubrics": [r["rubric"] for r in rubrics],
                        }
                    )
                    provenance["bench"].append(
                        {"instruction_id": iid, "set_index": k, "templates": templates + [rubrics[0]["template"]]}
                    )
        rng = random.Random(f"{seed}:{iid}:pairs")
        chosen = rng.choice(sets)
        k, preference_set, system, output, templates = chosen
        splits["small"].append(
            {**common, "preference_set": preference_set, "system": system, "prompt": prompt, "output": output}
        )
        provenance["small"].append({"instruction_id": iid, "set_index": k, "templates": templates})
        others = [s for s in sets if s[0] != k]
        if not others:
            report.pairs_skipped += 1
            continue
        rejected = rng.choice(others)
        pair_provenance = {
            "instruction_id": iid,
            "chosen_set_index": k,
            "rejected_set_index": rejected[0],
            "templates": templates,
        }
        for name in ("dpo", "orpo"):
            splits[name].append(
                {
                    **common,
                    "system": system,
                    "prompt": prompt,
                    "chosen": _messages(prompt, output),
                    "rejected": _messages(prompt, rejected[3]),
                }
            )
            provenance[name].append(pair_provenance)
        splits["rm"].append({"input": f"{system}\n{prompt}", "chosen": output, "rejected": rejected[3]})
        provenance["rm"].append(pair_provenance)
    for name, schema in SPLIT_SCHEMAS.items():
        if name == "bench" and rubric_rows is None:
            continue
        path = out_dir / "final" / name / "train.parquet"
        write_jsonl_atomic(out_dir / "final" / "provenance" / f"{name}.jsonl", provenance[name])
        report.rows[name] = len(splits[name])
        if not splits[name]:  # datasets.load_dataset cannot read a parquet file without rows: write none
            path.unlink(missing_ok=True)
            report.files[name] = {"path": None, "rows": 0, "sha256": None}
            continue
        digest = _write_parquet(path, splits[name], schema)
        report.files[name] = {"path": str(path.relative_to(out_dir)), "rows": len(splits[name]), "sha256": digest}
    return report
