"""Stage 1: load instructions, keep the first user turn, filter, dedup, decontaminate.

Why each filter: prompts that already set a persona ("You are ...", "Imagine ...") would bias the
preference sets; exact duplicates waste calls and leak between splits; prompts that overlap the
benchmark would contaminate evaluation. Nothing is dropped silently: every record that does not become
an instruction is written to ``instructions.rejected.jsonl`` with its source, line and reason.

Sources: local ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` files, or ``hf:NAME[:SPLIT]`` for anything
``datasets.load_dataset`` can open (a hub dataset such as ``hf:argilla/OpenHermesPreferences`` or a
local dataset directory). A record gives its text as ``prompt`` (plain text, Nectar-style
"Human: ... Assistant:" turns, or a message list), ``messages``/``conversations``/``conversation``/
``conversation_a``/``chosen`` (message lists), ``instruction`` (+ optional ``input``), ``turns`` or
``question``; optionally ``id``, ``main_source`` and ``original_source`` (or ``source``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from etils import epath

from janus_jax.jsonio import read_parquet, sha256_file
from janus_jax.paths import to_path

# A prompt that opens by giving the assistant a persona (after the Multifaceted Collection card's filter).
PERSONA_PATTERN = re.compile(r"^\s*(you are|you're|imagine|take \w*(?: \w+)* role)\b", re.IGNORECASE)
MESSAGE_LIST_FIELDS = ("messages", "conversations", "conversation", "conversation_a", "chosen")
TEXT_FIELDS = ("prompt", "instruction", "question", "query")
NGRAM = 13  # word n-gram length for decontamination (the GPT-3 paper's choice)


class RecordError(ValueError):
    """A record that cannot become an instruction; the message says which field and why."""


@dataclass
class RawRecord:
    origin: str  # "path:line" (or "hf:name:split:row")
    data: dict[str, Any] | None
    error: str | None = None


@dataclass
class InstructionReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        by_reason = Counter(r["reason"].split(":", 1)[0] for r in self.rejected)
        return {"read": self.read, "kept": len(self.rows), **{f"rejected_{k}": v for k, v in sorted(by_reason.items())}}


# ------------------------------------------------------------------------------------------ reading
def _iter_jsonl(path: epath.Path) -> Iterator[RawRecord]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            origin = f"{path}:{lineno}"
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as error:
                yield RawRecord(origin, None, f"unreadable: line is not valid JSON ({error})")
                continue
            if not isinstance(data, dict):
                yield RawRecord(origin, None, f"unreadable: expected a JSON object, got {type(data).__name__}")
                continue
            yield RawRecord(origin, data)


def _iter_table(rows: list[Any], origin_prefix: str) -> Iterator[RawRecord]:
    for index, data in enumerate(rows):
        origin = f"{origin_prefix}:{index + 1}"
        if isinstance(data, dict):
            yield RawRecord(origin, data)
        else:
            yield RawRecord(origin, None, f"unreadable: expected an object, got {type(data).__name__}")


def iter_source(source: str) -> Iterator[RawRecord]:
    """Raw records of one source, each with an origin for error messages (1-based line/row numbers)."""
    if source.startswith("hf:"):
        import datasets

        name, _, split = source[3:].partition(":")
        dataset = datasets.load_dataset(name, split=split or "train")
        for index, data in enumerate(dataset):
            yield RawRecord(f"{source}:{index + 1}", dict(data))
        return
    path = to_path(source)
    if not path.exists():
        raise FileNotFoundError(f"instruction source {source} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data.get("data", data.get("rows")) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ValueError(f"{source}: expected a JSON list of objects (or {{'data': [...]}})")
        yield from _iter_table(rows, str(path))
    elif suffix == ".parquet":
        yield from _iter_table(read_parquet(path), str(path))
    elif suffix == ".csv":
        import csv

        with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.DictReader(f), 2):  # line 1 is the header
                yield RawRecord(f"{path}:{lineno}", dict(row))
    else:
        raise ValueError(
            f"instruction source {source}: unsupported file type {suffix!r} "
            "(use .jsonl, .json, .parquet, .csv or hf:NAME[:SPLIT])"
        )


def default_main_source(source: str) -> str:
    if source.startswith("hf:"):
        return source[3:].partition(":")[0].rstrip("/").split("/")[-1]
    return to_path(source).stem


# ------------------------------------------------------------------------------------------ parsing
def _text_field(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be text, got {type(value).__name__}")
    return value


def _first_user_turn(messages: Any, name: str) -> str:
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"field {name!r} must be a non-empty list of messages")
    for message in messages:
        if not isinstance(message, dict):
            raise RecordError(f"field {name!r} holds a {type(message).__name__}, expected message objects")
        role = message.get("role", message.get("from"))
        if role in ("user", "human"):
            content = message.get("content", message.get("value"))
            if not isinstance(content, str):
                raise RecordError(f"field {name!r}: the first user message has no text content")
            return content
    raise RecordError(f"field {name!r} has no user message")


_HUMAN_TURN = re.compile(r"^\s*Human:\s*(.*?)(?:\n\nAssistant:|\Z)", re.DOTALL)


def extract_prompt(data: dict[str, Any]) -> str:
    """The first user turn of a record, whatever its format (see the module docstring)."""
    for name in TEXT_FIELDS:
        if name not in data or data[name] is None:
            continue
        value = data[name]
        if isinstance(value, list):
            return _first_user_turn(value, name)
        text = _text_field(data, name)
        if name == "instruction" and isinstance(data.get("input"), str) and data["input"].strip():
            return f"{text}\n\n{data['input']}"
        turn = _HUMAN_TURN.match(text)  # Nectar / Anthropic-HH style transcripts
        return turn.group(1) if turn else text
    for name in MESSAGE_LIST_FIELDS:
        if data.get(name) is not None:
            return _first_user_turn(data[name], name)
    if isinstance(data.get("turns"), list) and data["turns"]:
        first = data["turns"][0]  # MT-Bench: text; Arena-Hard: {"content": text}
        if isinstance(first, dict) and isinstance(first.get("content"), str):
            return first["content"]
        if not isinstance(first, str):
            raise RecordError(f"field 'turns' must hold text, got {type(first).__name__}")
        return first
    raise RecordError(
        "no prompt: expected one of the fields " + ", ".join(TEXT_FIELDS + MESSAGE_LIST_FIELDS) + ", turns"
    )


def parse_record(data: dict[str, Any], main_source: str) -> dict[str, Any]:
    """``{id (or None), main_source, original_source, prompt}`` of a record, or RecordError."""
    prompt = extract_prompt(data).strip()
    if not prompt:
        raise RecordError("empty prompt")
    record_id = data.get("id")
    if record_id is not None and (isinstance(record_id, bool) or not isinstance(record_id, (str, int))):
        raise RecordError(f"field 'id' must be text or an integer, got {type(record_id).__name__}")
    main = data.get("main_source", main_source)
    if not isinstance(main, str) or not main.strip():
        raise RecordError("field 'main_source' must be non-empty text")
    original = data.get("original_source", data.get("source"))
    if isinstance(original, list) and original and all(isinstance(x, str) for x in original):
        original = original[0]  # Nectar lists the sources of a prompt
    if original is None or original == "":
        original = main
    if not isinstance(original, str):
        raise RecordError(f"field 'original_source' must be text, got {type(original).__name__}")
    return {
        "id": None if record_id is None else str(record_id),
        "main_source": main,
        "original_source": original,
        "prompt": prompt,
    }


# ------------------------------------------------------------------------------------------ filters
def _normalise(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class Decontaminator:
    """Flags prompts equal to a benchmark prompt (after normalisation) or sharing a 13-word n-gram."""

    def __init__(self, bench_prompts: list[str]):
        self.exact = {" ".join(_normalise(p)) for p in bench_prompts}
        self.ngrams: set[str] = set()
        for prompt in bench_prompts:
            self.ngrams.update(self._ngrams(_normalise(prompt)))

    @staticmethod
    def _ngrams(words: list[str]) -> set[str]:
        return {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}

    def match(self, prompt: str) -> str | None:
        words = _normalise(prompt)
        if " ".join(words) in self.exact:
            return "equal to a benchmark prompt"
        shared = self._ngrams(words) & self.ngrams
        return f"shares the {NGRAM}-gram {sorted(shared)[0]!r} with a benchmark prompt" if shared else None

    @classmethod
    def from_files(cls, paths: list[str]) -> Decontaminator:
        prompts: list[str] = []
        for path in paths:
            for raw in iter_source(path):
                if raw.data is None:
                    raise ValueError(f"decontamination file {raw.origin}: {raw.error}")
                try:
                    prompts.append(extract_prompt(raw.data))
                except RecordError as error:
                    raise ValueError(f"decontamination file {raw.origin}: {error}") from None
        return cls(prompts)


def generated_id(main_source: str, prompt: str) -> str:
    return f"{main_source}-{hashlib.sha256(prompt.encode('utf-8')).hexdigest()[:16]}"


def load_instructions(
    sources: list[str], *, limit: int | None = None, decontaminator: Decontaminator | None = None
) -> InstructionReport:
    """Read every source in order and return the kept instructions and the reasons for the rest."""
    report = InstructionReport()
    ids: dict[str, str] = {}  # id -> origin of its first use
    prompts: dict[str, str] = {}  # prompt -> id of its first use

    def reject(raw: RawRecord, reason: str, **extra: Any) -> None:
        report.rejected.append({"origin": raw.origin, "reason": reason, **extra})

    for source in sources:
        read_before = report.read
        main_source = default_main_source(source)
        for raw in iter_source(source):
            if limit is not None and len(report.rows) >= limit:
                break
            report.read += 1
            if raw.data is None:
                reject(raw, raw.error or "unreadable")
                continue
            try:
                record = parse_record(raw.data, main_source)
            except RecordError as error:
                reject(raw, f"invalid: {error}")
                continue
            record_id = record["id"] or generated_id(record["main_source"], record["prompt"])
            if record["id"] is not None and record_id in ids:
                reject(raw, f"duplicate_id: id {record_id!r} was already used at {ids[record_id]}", id=record_id)
                continue
            if PERSONA_PATTERN.search(record["prompt"]):
                reject(raw, "persona: the prompt already sets a persona", id=record_id)
                continue
            if record["prompt"] in prompts:
                reject(raw, f"duplicate: same prompt as instruction {prompts[record['prompt']]!r}", id=record_id)
                continue
            if decontaminator is not None and (why := decontaminator.match(record["prompt"])):
                reject(raw, f"contaminated: {why}", id=record_id)
                continue
            if record_id in ids:  # a generated id equal to a given one: keep ids unique
                reject(raw, f"duplicate_id: id {record_id!r} was already used at {ids[record_id]}", id=record_id)
                continue
            ids[record_id] = raw.origin
            prompts[record["prompt"]] = record_id
            report.rows.append(
                {
                    "id": record_id,
                    "main_source": record["main_source"],
                    "original_source": record["original_source"],
                    "prompt": record["prompt"],
                    "origin": raw.origin,
                }
            )
        report.sources.append(
            {
                "source": source,
                "records_read": report.read - read_before,
                **({"sha256": sha256_file(source)} if to_path(source).is_file() else {}),
            }
        )
    return report
