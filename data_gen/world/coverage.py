"""How much of the world's training variety a condition sees: value combinations and paraphrase sentences.

Why: the paper's ablation (1 < 2 < 3 system messages per instruction) adds variety because every message of
the Multifaceted Collection comes from its own preference set. In a world whose whole variety already fits in
one message per instruction, more messages per instruction only repeat it; these counts say which case a
world is in before anything is trained.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from data_gen.world.templates import PARAPHRASES
from data_gen.world.values import all_combinations
from janus_jax.data.pipeline import select_system_messages
from janus_jax.data.records import validate
from janus_jax.data.report import DataReport


def coverage(
    sft_rows: list[dict[str, Any]], per_instruction: int, held_out: list[tuple[str, ...]]
) -> dict[str, Any]:
    """Counts over the SFT rows the data pipeline keeps at `per_instruction` system messages per instruction
    (`held_out`: the combinations the bench keeps out of training). A "fewest rows" of 0: some are unseen."""
    kept = {e.row for e in select_system_messages(validate(sft_rows, "sft", DataReport(), "world"), per_instruction)}
    rows = [row for i, row in enumerate(sft_rows) if i in kept]
    combinations = Counter(tuple(row["value_ids"]) for row in rows)
    sentences: Counter[str] = Counter()
    for row in rows:  # a message is its opening and one training paraphrase per value, joined by spaces
        for value_id in row["value_ids"]:
            sentences.update(p for p in PARAPHRASES[value_id][0] if p in row["system"])
    training = [c for c in all_combinations() if c not in set(held_out)]
    paraphrases = [p for value_id in PARAPHRASES for p in PARAPHRASES[value_id][0]]
    return {
        "system_messages_per_instruction": per_instruction,
        "rows": len(rows),
        "distinct_system_messages": len({row["system"] for row in rows}),
        "combinations_seen": len(combinations),
        "training_combinations": len(training),
        "fewest_rows_per_combination": min(combinations[c] for c in training),
        "paraphrases_seen": len(sentences),
        "training_paraphrases": len(paraphrases),
        "fewest_rows_per_paraphrase": min(sentences[p] for p in paraphrases),
    }
