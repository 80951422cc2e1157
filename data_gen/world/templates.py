"""Second-person system messages written from a value combination, with many paraphrases per value.

Every value has training paraphrases and held-out ones; the opening persona line likewise. An unseen system
message (the bench) uses only held-out paraphrases and openings, so none of its sentences occurs in training:
a model must generalize from the words it has seen (json, bullet, numbered, brief, expert, warn, ...).
"""

from __future__ import annotations

import random

from data_gen.world.values import DIMENSIONS

# value id -> (training paraphrases, held-out paraphrases)
PARAPHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "format=json": (
        ("Reply with a JSON object and nothing else.", "Your answer must be a single JSON object.",
         "Format your reply as JSON.", "Write the answer as a JSON object with one key per fact.",
         "Give only JSON, no prose.", "You output JSON objects only."),
        ("Respond purely in JSON.", "Return a JSON object as your whole reply."),
    ),
    "format=numbered": (
        ("Use a numbered list.", "Number every line of your answer.", "Write your reply as numbered points.",
         "Give the facts as a numbered list, one per line.", "You answer in numbered steps.",
         "Present each fact on its own numbered line."),
        ("Put the facts in a numbered list.", "Your reply should be numbered lines."),
    ),
    "format=bullets": (
        ("Use bullet points.", "Write each fact as a bullet.", "Answer with a bulleted list.",
         "Start every line with a bullet dash.", "You like bullet lists.", "Give the facts as bullets, one per line."),
        ("List the facts as bullet points.", "Your reply should be a bullet list."),
    ),
    "format=paragraph": (
        ("Write one paragraph.", "Answer in a single paragraph of prose.", "Use plain prose, no lists.",
         "Keep everything in one flowing paragraph.", "You write in paragraphs, never lists.",
         "Give a prose paragraph without line breaks."),
        ("Reply as one paragraph of text.", "Your answer should be a paragraph of prose."),
    ),
    "length=short": (
        ("Be brief.", "Keep it short.", "Give only the key facts.", "Your answer must be short and to the point.",
         "Use as few words as possible.", "Be concise."),
        ("Keep the answer brief and short.", "Stay concise; key facts only."),
    ),
    "length=detailed": (
        ("Be detailed.", "Include every fact.", "Give a thorough answer with all the facts.", "Leave no fact out.",
         "Be complete and detailed.", "Cover all of the details."),
        ("Give every detail, be thorough.", "Your reply should include all facts in detail."),
    ),
    "audience=novice": (
        ("The reader is a beginner.", "Explain terms for a novice.", "Define any technical term.",
         "Assume no background knowledge.", "Write for a newcomer and define jargon.", "I am new to this topic."),
        ("Your reader is a novice; define terms.", "Explain the jargon for a beginner."),
    ),
    "audience=expert": (
        ("The reader is an expert.", "Skip definitions; I know the terms.",
         "Use technical terms without explaining them.", "Write for a specialist.", "Assume expert knowledge.",
         "I am an expert in this field."),
        ("Your reader is a specialist; no definitions.", "Do not define terms, the reader is an expert."),
    ),
    "safety=caution": (
        ("Warn about any risk.", "Mention safety cautions when there is a risk.",
         "Always add a caution if something is dangerous.", "Point out hazards.",
         "Be safety-minded and warn the reader.", "Flag any danger with a caution."),
        ("Add a caution about risks.", "If there is a hazard, warn about it."),
    ),
    "safety=plain": (
        ("Do not add warnings.", "No safety notes, please.", "Skip any cautions.", "Leave out hazard warnings.",
         "I do not want caution notes.", "Never add warnings."),
        ("Omit any caution.", "Give no warnings at all."),
    ),
}
OPENINGS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("You are a helpful assistant.", "You are a guide for a curious reader.", "You write short fact sheets.",
     "You are an encyclopedia writer.", "You are a nature tutor.", ""),
    ("You are a museum docent.", "You are a field-notes writer."),
)
assert set(PARAPHRASES) == {v for values in DIMENSIONS.values() for v in values}


def system_message(combo: tuple[str, ...], rng: random.Random, held_out: bool) -> str:
    """A system message stating every value of `combo`, sentences in a random order.

    `held_out` picks the held-out paraphrases and openings (never used in training).
    """
    part = 1 if held_out else 0
    sentences = [rng.choice(PARAPHRASES[v][part]) for v in combo]
    rng.shuffle(sentences)
    opening = rng.choice(OPENINGS[part])
    return " ".join(s for s in (opening, *sentences) if s)
