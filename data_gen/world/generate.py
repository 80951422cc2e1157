"""Build the synthetic preference world: training rows, held-out rows, DPO pairs and a bench, all seeded.

Files written to the output directory (Multifaceted Collection / Bench schemas, plus structured value ids):
  sft.jsonl          training instructions x k system messages: main_source, original_source, preference_set,
                     system, prompt, output, value_ids, record
  sft_heldout.jsonl  held-out instructions x k unseen system messages (the eval-loss set of every condition)
  dpo.jsonl          chosen = the reply to the row's own system message, rejected = the same instruction's
                     reply under another of its system messages (as the paper builds them)
  bench.jsonl        held-out instructions, each once with an unseen system message (held-out value
                     combination and paraphrases) and once with a system message seen in training (one
                     that every system_messages_per_instruction setting keeps):
                     source, preference_set, system, prompt, reference_answer, rubrics, value_ids,
                     seen_system_message, record
  world.json         the config, its hash and row counts (a rerun with the same config reuses the files)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_gen.world.checker import satisfies
from data_gen.world.records import Record, make_records
from data_gen.world.replies import render_reply
from data_gen.world.templates import system_message
from data_gen.world.values import DESCRIPTIONS, DIMENSION_OF, WorldError, all_combinations, combination
from janus_jax.data.pipeline import select_system_messages
from janus_jax.data.records import validate
from janus_jax.data.report import DataReport

SOURCE = "janus-world"
VERSION = 4  # part of the config digest: a world written by an older generator is rebuilt
FILES = ("sft.jsonl", "sft_heldout.jsonl", "dpo.jsonl", "bench.jsonl")


@dataclass(frozen=True)
class WorldConfig:
    """What the world is made of. `held_out_combinations` is a count (drawn by the seed) or explicit lists."""

    seed: int = 0
    train_instructions: int = 800
    heldout_instructions: int = 60
    system_messages_per_instruction: int = 3
    held_out_combinations: int | list[list[str]] = 8
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        known = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WorldError(f"unknown world config keys {unknown}; known: {sorted(known)}")
        cfg = cls(**data)
        cfg.held_out()  # validates the combinations now, not half way through
        if cfg.train_instructions < 1 or cfg.heldout_instructions < 1:
            raise WorldError("train_instructions and heldout_instructions must be at least 1")
        if not 1 <= cfg.system_messages_per_instruction <= 3:
            raise WorldError(f"system_messages_per_instruction must be 1, 2 or 3, got "
                             f"{cfg.system_messages_per_instruction}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}

    def digest(self) -> str:
        payload = {**self.to_dict(), "generator_version": VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def held_out(self) -> list[tuple[str, ...]]:
        """The value combinations that only the bench uses."""
        if isinstance(self.held_out_combinations, int):
            n = len(all_combinations())
            if not 1 <= self.held_out_combinations < n:
                raise WorldError(f"held_out_combinations must be in [1, {n}), got {self.held_out_combinations}")
            return sorted(balanced_draw(self.held_out_combinations, random.Random(f"held-out:{self.seed}")))
        out = []
        for i, ids in enumerate(self.held_out_combinations):
            try:
                out.append(combination(ids))
            except WorldError as e:
                raise WorldError(f"held_out_combinations[{i}]: {e}") from None
        return out


def balanced_draw(n: int, rng: random.Random) -> list[tuple[str, ...]]:
    """`n` distinct combinations in which every value, and every pair of values, occurs as evenly as the
    count allows: a plain random draw of 8 of 32 gave 7 held-out combinations with `length=detailed`, so the
    bench measured one value of a dimension and not the other."""
    candidates = all_combinations()
    rng.shuffle(candidates)
    value_counts: dict[str, int] = {}
    pair_counts: dict[tuple[str, str], int] = {}

    def load(combo: tuple[str, ...]) -> tuple[int, int]:
        pairs = [(a, b) for i, a in enumerate(combo) for b in combo[i + 1:]]
        return sum(value_counts.get(v, 0) for v in combo), sum(pair_counts.get(p, 0) for p in pairs)

    chosen: list[tuple[str, ...]] = []
    for _ in range(n):
        best = min((c for c in candidates if c not in chosen), key=load)  # ties: the shuffled order decides
        chosen.append(best)
        for i, a in enumerate(best):
            value_counts[a] = value_counts.get(a, 0) + 1
            for b in best[i + 1:]:
                pair_counts[(a, b)] = pair_counts.get((a, b), 0) + 1
    return chosen


def preference_set(combo: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"dimension": DIMENSION_OF[v], "subdimension": v.split("=")[0], "preference": v,
             "description": DESCRIPTIONS[v]} for v in combo]


def rubric(value_id: str) -> dict[str, Any]:
    """A Multifaceted-Bench rubric for one value; the id in brackets is what the rule-based judge reads."""
    desc = DESCRIPTIONS[value_id]
    return {
        "criteria": f"Does the response satisfy the preference [{value_id}]: {desc}?",
        "score_descriptions": {
            "1": f"The response ignores the preference: it is not true that {desc}.",
            "2": "The response makes a weak attempt at the preference.",
            "3": "The response partly satisfies the preference.",
            "4": "The response nearly satisfies the preference.",
            "5": f"The response fully satisfies the preference: {desc}.",
        },
    }


def _row(record: Record, system: str, combo: tuple[str, ...]) -> dict[str, Any]:
    reply = render_reply(record, combo)
    failed = [v for v in combo if not satisfies(v, reply, record)]
    if failed:  # the world must be consistent with its own checks
        raise WorldError(f"gold reply for {record.name} under {combo} fails {failed}: {reply!r}")
    return {"main_source": SOURCE, "original_source": SOURCE, "preference_set": preference_set(combo),
            "system": system, "prompt": record.prompt(), "output": reply, "value_ids": list(combo),
            "record": record.to_dict()}


def build_world(cfg: WorldConfig) -> dict[str, list[dict[str, Any]]]:
    """All rows of the world, by file name."""
    rng = random.Random(cfg.seed)
    held = set(cfg.held_out())
    train_combos = [c for c in all_combinations() if c not in held]
    records = make_records(cfg.train_instructions + cfg.heldout_instructions, rng)
    train_records, heldout_records = records[: cfg.train_instructions], records[cfg.train_instructions:]
    k = cfg.system_messages_per_instruction

    sft, dpo = [], []
    for record in train_records:
        group = [_row(record, system_message(c, rng, held_out=False), c) for c in rng.sample(train_combos, k)]
        sft.extend(group)
        for i, row in enumerate(group):
            # Rejected: the next of the instruction's replies that differs (two combinations can give the same
            # reply, e.g. caution vs. plain on a record without risk); none differs -> no pair for this row.
            other = next((o for o in group[i + 1:] + group[:i] if o["output"] != row["output"]), None)
            if other is not None:
                dpo.append({"main_source": SOURCE, "original_source": SOURCE, "system": row["system"],
                            "prompt": row["prompt"],
                            "chosen": [{"content": row["prompt"], "role": "user"},
                                       {"content": row["output"], "role": "assistant"}],
                            "rejected": [{"content": row["prompt"], "role": "user"},
                                         {"content": other["output"], "role": "assistant"}]})
    held_list = sorted(held)
    heldout = [_row(r, system_message(c, rng, held_out=True), c)
               for r in heldout_records for c in rng.sample(held_list, min(k, len(held_list)))]
    # The control's system messages come from rows every condition trains on: the one row per instruction
    # that the data pipeline keeps at system_messages_per_instruction=1 (it keeps it at 2 and 3 as well).
    kept = {e.row for e in select_system_messages(validate(sft, "sft", DataReport(), "world"), 1)}
    seen_systems = [(row["system"], tuple(row["value_ids"])) for i, row in enumerate(sft) if i in kept]
    bench = []
    # Each held-out combination in turn (shuffled), so the bench weighs every value alike.
    bench_combos = rng.sample(held_list, len(held_list))
    for n, record in enumerate(heldout_records):
        unseen_combo = bench_combos[n % len(bench_combos)]
        seen_system, seen_combo = rng.choice(seen_systems)
        for system, combo, seen in ((system_message(unseen_combo, rng, held_out=True), unseen_combo, False),
                                    (seen_system, seen_combo, True)):
            row = _row(record, system, combo)
            bench.append({"source": SOURCE + ("/seen" if seen else "/unseen"),
                          "preference_set": row["preference_set"], "system": system, "prompt": row["prompt"],
                          "reference_answer": row["output"], "rubrics": [rubric(v) for v in combo],
                          "value_ids": list(combo), "seen_system_message": seen, "record": row["record"]})
    train_systems = {row["system"] for row in sft}
    leaked = [r["system"] for r in [*heldout, *(b for b in bench if not b["seen_system_message"])]
              if r["system"] in train_systems]
    if leaked:
        raise WorldError(f"{len(leaked)} unseen system messages occur in training, e.g. {leaked[0]!r}")
    return {"sft.jsonl": sft, "sft_heldout.jsonl": heldout, "dpo.jsonl": dpo, "bench.jsonl": bench}


def write_world(cfg: WorldConfig, out: str | Path) -> Path:
    """Write the world to `out` (skipped when `out/world.json` already holds this config); returns `out`."""
    out = Path(out)
    meta_path = out / "world.json"
    if meta_path.exists() and all((out / f).exists() for f in FILES):
        meta = json.loads(meta_path.read_text())
        if meta.get("digest") == cfg.digest():
            return out
    out.mkdir(parents=True, exist_ok=True)
    files = build_world(cfg)
    for name, rows in files.items():
        tmp = out / f"{name}.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(out / name)
    meta = {"config": cfg.to_dict(), "digest": cfg.digest(), "rows": {n: len(r) for n, r in files.items()},
            "held_out_combinations": [list(c) for c in cfg.held_out()]}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_world_config(path: str | None) -> WorldConfig:
    """The world config of a JSON file (keys of WorldConfig), or the default world."""
    if not path:
        return WorldConfig()
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise WorldError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise WorldError(f"{path}: a world config is a JSON object")
    return WorldConfig.from_dict(data)
