"""Instruction records: each instruction carries the facts its reply must present.

A small model trained from scratch cannot know facts about the world, so every prompt states its record
(`name: ...`, `kind: ...`, ...) and a good reply re-presents those facts in the requested form.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

KINDS = ("fern", "beetle", "mushroom", "shrub", "lizard", "moss", "orchid", "crab", "cactus", "moth")
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "brown", "pink", "golden")
ORIGINS = ("Peru", "Norway", "Kenya", "Japan", "Chile", "Egypt", "Canada", "Nepal", "Brazil", "Iceland", "Spain",
           "Mexico", "India", "Ghana", "Finland")
USES = ("tea", "dye", "medicine", "rope", "perfume", "food", "soap", "paper", "glue", "ink", "fuel", "fabric")
TERMS = (
    ("rhizome", "an underground stem"), ("chitin", "a tough shell material"), ("tannin", "a bitter plant compound"),
    ("spore", "a tiny seed-like cell"), ("keratin", "a hard protein"), ("alkaloid", "a bitter natural chemical"),
    ("mycelium", "a web of fungal threads"), ("resin", "a sticky tree fluid"), ("lignin", "a woody fiber"),
    ("stomata", "tiny leaf pores"), ("carapace", "a hard back shell"), ("latex", "a milky plant sap"),
)
RISKS = ("its sap irritates the skin", "its spines can cut", "its berries are toxic", "its spores cause allergies",
         "it can bite", "its dust is flammable")
NO_RISK = "none"
INTROS = ("Tell me about this item.", "Describe the following item.", "What can you say about this?",
          "Write about the record below.", "Present this item to me.", "Explain what this is.")
SYLLABLES = ("ka", "lo", "mi", "ra", "ve", "tu", "sel", "dor", "an", "bri", "zo", "pel", "nu", "gar", "fi", "os")
FACT_KEYS = ("kind", "origin", "color", "use")  # the facts `length=detailed` requires


@dataclass(frozen=True)
class Record:
    """The facts of one instruction. `risk` is NO_RISK when the topic is safe."""

    name: str
    kind: str
    origin: str
    color: str
    use: str
    term: str
    definition: str
    risk: str
    intro: str

    @property
    def risky(self) -> bool:
        return self.risk != NO_RISK

    def prompt(self) -> str:
        """The user prompt: an intro line, then one `key: value` line per field."""
        lines = [self.intro, f"name: {self.name}", *(f"{k}: {getattr(self, k)}" for k in FACT_KEYS),
                 f"term: {self.term} = {self.definition}", f"risk: {self.risk}"]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def make_records(n: int, rng: random.Random) -> list[Record]:
    """`n` records with distinct names (half of them risky)."""
    records, names = [], set()
    while len(records) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name in names:
            continue
        names.add(name)
        term, definition = rng.choice(TERMS)
        records.append(Record(name=name, kind=rng.choice(KINDS), origin=rng.choice(ORIGINS),
                              color=rng.choice(COLORS), use=rng.choice(USES), term=term, definition=definition,
                              risk=rng.choice(RISKS) if rng.random() < 0.5 else NO_RISK, intro=rng.choice(INTROS)))
    return records
