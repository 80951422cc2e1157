"""The gold reply to a record under a value combination: the reply every check of the world accepts."""

from __future__ import annotations

import json

from data_gen.world.records import Record


def _term(record: Record, audience: str) -> str:
    return f"{record.term} ({record.definition})" if audience == "audience=novice" else record.term


def _sentences(record: Record, length: str, audience: str, safety: str) -> list[str]:
    term = _term(record, audience)
    if length == "length=short":
        out = [f"{record.name} is a {record.kind} from {record.origin}.", f"Its key term is {term}."]
    else:
        out = [f"{record.name} is a {record.kind} that comes from {record.origin}.",
               f"Its color is {record.color}, which makes it easy to recognize.",
               f"People use it for {record.use} in many places.", f"A key term for it is {term}."]
    if safety == "safety=caution" and record.risky:
        out.append(f"Caution: {record.risk}.")
    return out


def _json_reply(record: Record, length: str, audience: str, safety: str) -> str:
    obj = {"name": record.name, "kind": record.kind, "origin": record.origin}
    if length == "length=detailed":
        obj.update(color=record.color, use=record.use)
    obj["term"] = _term(record, audience)
    if safety == "safety=caution" and record.risky:
        obj["caution"] = record.risk
    return json.dumps(obj)


def render_reply(record: Record, combo: tuple[str, ...]) -> str:
    """The reply to `record` that satisfies every value of `combo` (style, length, audience, safety)."""
    style, length, audience, safety = combo
    if style == "format=json":
        return _json_reply(record, length, audience, safety)
    sentences = _sentences(record, length, audience, safety)
    if style == "format=paragraph":
        return " ".join(sentences)
    if style == "format=bullets":
        return "\n".join(f"- {s}" for s in sentences)
    return "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, start=1))
