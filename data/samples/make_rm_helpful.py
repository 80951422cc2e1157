"""Write rm_helpful.jsonl: general-helpfulness pairs for the tiny stage-2 reward model (`configs/rm.py:tiny_helpful`).

The paper's stage 2 trains Janus-RM on helpfulness pairs without system messages (HH-RLHF, OpenAssistant,
WebGPT; `python -m data_gen.helpfulness` writes them at 7B scale). This sample mimics their shape with the
topics of make_samples.py: `input` is the bare question, `chosen` answers it with its everyday comparison,
and `rejected` is unhelpful (a shrug, a refusal, or the answer to another question). Rows carry `source`
and `source_row` as data_gen.helpfulness's do.

Deterministic: `python data/samples/make_rm_helpful.py` rewrites an identical file.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_samples import OUT, SOURCE, TOPICS, write_jsonl  # noqa: E402

SEED = 2025
SHRUGS = ["I don't know.", "Not sure, you could look it up.", "Hard to say."]
REFUSALS = ["I'd rather not answer that.", "I can't help with that question."]


def build() -> list[dict]:
    rng = random.Random(SEED)
    rows = []
    for i, (question, answer, _, comparison) in enumerate(TOPICS):
        kind = rng.choice(["shrug", "refusal", "off_topic"])
        if kind == "shrug":
            rejected = rng.choice(SHRUGS)
        elif kind == "refusal":
            rejected = rng.choice(REFUSALS)
        else:
            rejected = TOPICS[rng.choice([j for j in range(len(TOPICS)) if j != i])][1]
        chosen = f"{answer} In other words, {comparison}."
        rows.append({"input": question, "chosen": chosen, "rejected": rejected,
                     "source": f"{SOURCE}/helpfulness", "source_row": i})
    return rows


def main() -> None:
    rows = build()
    path = OUT / "rm_helpful.jsonl"
    write_jsonl(path, rows)
    print(f"{path.name}: {len(rows)} rows, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
