"""Janus-RM's second stage data: general helpfulness pairs in the RM schema (`input`, `chosen`, `rejected`).

The paper trains its reward model in two stages: the Multifaceted preference pairs, then about 66k
helpfulness pairs from Anthropic HH-RLHF, OpenAssistant and the WebGPT comparisons. The Janus repository's
`train_rm_helpful.sh` mixes `Anthropic/hh-rlhf`, `tasksource/oasst1_pairwise_rlhf_reward` (oasst1's ranked
replies as best/worst pairs) and `openai/webgpt_comparisons` with probabilities 0.72 / 0.14 / 0.14 and keeps
66,000 pairs. This module converts each dataset's published rows and draws that mix:

    python -m data_gen.helpfulness --out data/rm_helpful            # from the hub (needs `datasets`)
    python -m data_gen.helpfulness --hh helpful-base/train.jsonl.gz --oasst train.parquet \\
        --webgpt comparisons.jsonl --out data/rm_helpful             # from local copies

How each source becomes a pair (the dialogue so far is the RM `input`, one user turn of the template):
  hh-rlhf  `chosen`/`rejected` are whole transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ..."); both must share
           everything before their last "\\n\\nAssistant:", which is the dialogue; the replies after it are
           chosen and rejected.
  oasst1   `prompt` is the history, one "prompter: ..." / "assistant: ..." message per line; `chosen`/`rejected`
           are the best- and worst-ranked replies.
  webgpt   `question.full_text` is the prompt; the answer with the higher score is chosen; equal scores
           (no preference) are left out.
A single-turn dialogue is its bare prompt; a longer one is a "Human: ... / Assistant: ..." transcript ending
with the last human turn. Rows that cannot be converted (a missing or empty field, identical replies, a tie,
transcripts that part before the last reply) are counted and listed with their row index and reason in
`report.json`; none is dropped silently.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from janus_jax.jsonio import write_json_atomic, write_jsonl_atomic
from janus_jax.paths import StorageUnavailable, check_writable, to_path

SOURCES = ("hh", "oasst", "webgpt")
HUB = {
    "hh": "Anthropic/hh-rlhf",
    "oasst": "tasksource/oasst1_pairwise_rlhf_reward",
    "webgpt": "openai/webgpt_comparisons",
}
PAPER_PROBS = {"hh": 0.72, "oasst": 0.14, "webgpt": 0.14}  # train_rm_helpful.sh --dataset_probs
PAPER_PAIRS = 66_000  # train_rm_helpful.sh --max_samples


class BadRow(ValueError):
    """A row that cannot become a pair; the message is the reason."""


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise BadRow(f"field {key!r} is missing or not a string")
    if not value.strip():
        raise BadRow(f"field {key!r} is empty")
    return value


def _dialogue(turns: list[tuple[str, str]]) -> str:
    """The RM input of a dialogue ending with a human turn: the bare prompt, or a Human/Assistant transcript."""
    if not turns or turns[-1][0] != "Human":
        raise BadRow("the dialogue does not end with a human turn")
    if len(turns) == 1:
        return turns[0][1]
    return "\n\n".join(f"{speaker}: {text}" for speaker, text in turns)


def _pair(rm_input: str, chosen: str, rejected: str) -> dict[str, str]:
    chosen, rejected = chosen.strip(), rejected.strip()
    if not chosen or not rejected:
        raise BadRow("a reply is empty")
    if chosen == rejected:
        raise BadRow("chosen and rejected replies are identical")
    return {"input": rm_input.strip(), "chosen": chosen, "rejected": rejected}


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def _hh_turns(transcript: str) -> list[tuple[str, str]]:
    parts = _HH_TURN.split("\n\n" + transcript.lstrip("\n"))
    if parts[0].strip():
        raise BadRow("the transcript does not start with 'Human:'")
    return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def convert_hh(row: dict[str, Any]) -> dict[str, str]:
    """An Anthropic/hh-rlhf row (`chosen`, `rejected` transcripts) as an RM pair."""
    chosen, rejected = _hh_turns(_text(row, "chosen")), _hh_turns(_text(row, "rejected"))
    if len(chosen) < 2 or chosen[-1][0] != "Assistant" or rejected[-1][0] != "Assistant":
        raise BadRow("a transcript does not end with an assistant reply")
    if chosen[:-1] != rejected[:-1]:
        raise BadRow("chosen and rejected transcripts differ before the last assistant reply")
    return _pair(_dialogue(chosen[:-1]), chosen[-1][1], rejected[-1][1])


_OASST_TURN = re.compile(r"^(prompter|assistant): ", re.MULTILINE)


def convert_oasst(row: dict[str, Any]) -> dict[str, str]:
    """A tasksource/oasst1_pairwise_rlhf_reward row (`prompt` history, `chosen`, `rejected`) as an RM pair."""
    parts = _OASST_TURN.split(_text(row, "prompt"))
    if parts[0].strip():
        raise BadRow("the prompt does not start with 'prompter: '")
    speakers = {"prompter": "Human", "assistant": "Assistant"}
    turns = [(speakers[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    return _pair(_dialogue(turns), _text(row, "chosen"), _text(row, "rejected"))


def convert_webgpt(row: dict[str, Any]) -> dict[str, str]:
    """An openai/webgpt_comparisons row (`question`, `answer_0/1`, `score_0/1`) as an RM pair."""
    question = row.get("question")
    if not isinstance(question, dict):
        raise BadRow("field 'question' is missing or not an object")
    prompt = _text(question, "full_text")
    scores = [row.get("score_0"), row.get("score_1")]
    if not all(isinstance(s, (int, float)) for s in scores):
        raise BadRow("fields 'score_0'/'score_1' are missing or not numbers")
    if scores[0] == scores[1]:
        raise BadRow("equal scores: no preference")
    best = 0 if scores[0] > scores[1] else 1
    return _pair(prompt, _text(row, f"answer_{best}"), _text(row, f"answer_{1 - best}"))


CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {
    "hh": convert_hh,
    "oasst": convert_oasst,
    "webgpt": convert_webgpt,
}


def convert_rows(source: str, rows: Iterable[dict[str, Any] | None]) -> tuple[list[dict], list[dict]]:
    """(pairs, problems): every row converted, or listed in `problems` with its index and reason.

    Each pair carries `source` and `source_row`, so any training row can be traced to its origin.
    """
    convert = CONVERTERS[source]
    pairs, problems = [], []
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise BadRow("not a JSON object")
            pair = convert(row)
        except BadRow as bad:
            problems.append({"source": source, "row": index, "reason": str(bad)})
            continue
        pairs.append({**pair, "source": source, "source_row": index})
    return pairs, problems


def read_rows(path_or_hub_id: str, split: str = "train") -> list[dict[str, Any] | None]:
    """Rows of a `.jsonl`, `.jsonl.gz`, `.json` or `.parquet` file, local or gs:// (a line that is not JSON
    becomes None, so it is reported by index), or of a hub dataset."""
    path = to_path(path_or_hub_id)
    if path.name.endswith(".jsonl.gz") or path.suffix == ".jsonl":
        with path.open("rb") as raw:
            data = gzip.decompress(raw.read()) if path.suffix == ".gz" else raw.read()
        return [_json_or_none(line) for line in io.StringIO(data.decode("utf-8")) if line.strip()]
    from janus_jax.data.report import DataReport
    from janus_jax.data.sources import load_rows

    return load_rows(str(path_or_hub_id), split, DataReport(source=str(path_or_hub_id)), split)


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def shares(total: int, probs: dict[str, float]) -> dict[str, int]:
    """Pairs per source: `total` split by `probs` (largest remainders, so the counts add up to `total`)."""
    weight = sum(probs.values())
    exact = {name: total * p / weight for name, p in probs.items()}
    counts = {name: int(x) for name, x in exact.items()}
    for name in sorted(exact, key=lambda n: counts[n] - exact[n])[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def mix(pairs: dict[str, list[dict]], total: int, probs: dict[str, float], seed: int) -> list[dict]:
    """`total` pairs drawn at random (seeded) from each source in proportion to `probs`, then shuffled.

    A source with fewer pairs than its share is an error naming it, not a silently smaller mix.
    """
    rng = random.Random(seed)
    wanted = shares(total, {name: probs[name] for name in pairs})
    short = {name: (len(pairs[name]), n) for name, n in wanted.items() if len(pairs[name]) < n}
    if short:
        shown = ", ".join(f"{name}: {have} pairs for a share of {n}" for name, (have, n) in short.items())
        raise ValueError(f"not enough pairs for {total} ({shown}); lower --pairs or add data")
    drawn = [p for name in pairs for p in rng.sample(pairs[name], wanted[name])]
    rng.shuffle(drawn)
    return drawn


def build(sources: dict[str, list[str]], out: str | os.PathLike, *, total: int, probs: dict[str, float], seed: int,
          split: str = "train") -> dict[str, Any]:
    """Convert every source, draw the mix, write `rm_helpful.jsonl` and `report.json`; return the report."""
    pairs: dict[str, list[dict]] = {}
    problems: list[dict] = []
    read: Counter[str] = Counter()
    for name, paths in sources.items():
        pairs[name] = []
        for path in paths:
            rows = read_rows(path, split)
            read[name] += len(rows)
            converted, bad = convert_rows(name, rows)
            for item in converted + bad:
                item["file"] = path
            pairs[name] += converted
            problems += bad
    mixed = mix(pairs, total, probs, seed)
    out = to_path(out)
    write_jsonl_atomic(out / "rm_helpful.jsonl", mixed)
    report = {
        "pairs": len(mixed),
        "seed": seed,
        "probs": {name: probs[name] for name in sources},
        "rows_read": dict(read),
        "converted": {name: len(p) for name, p in pairs.items()},
        "drawn": dict(Counter(p["source"] for p in mixed)),
        "not_converted": dict(Counter(f"{p['source']}: {p['reason']}" for p in problems)),
        "problems": problems,
    }
    write_json_atomic(out / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_gen.helpfulness", description=__doc__.splitlines()[0])
    for name, flag in (("hh", "--hh"), ("oasst", "--oasst"), ("webgpt", "--webgpt")):
        parser.add_argument(flag, action="append", default=None, metavar="SRC",
                            help=f"local file (.jsonl, .jsonl.gz, .json, .parquet) or hub id (default {HUB[name]}); "
                                 "repeatable")
    parser.add_argument("--out", required=True, type=to_path,
                        help="directory (local or gs://) for rm_helpful.jsonl and report.json")
    parser.add_argument("--pairs", type=int, default=PAPER_PAIRS, help=f"pairs in the mix (default {PAPER_PAIRS})")
    parser.add_argument("--probs", default="0.72,0.14,0.14", help="shares of hh,oasst,webgpt (default the paper's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", default="train", help="split of hub datasets")
    args = parser.parse_args(argv)
    try:
        values = [float(x) for x in args.probs.split(",")]
    except ValueError:
        parser.error(f"--probs wants three numbers, got {args.probs!r}")
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        parser.error(f"--probs wants three non-negative numbers for hh,oasst,webgpt, got {args.probs!r}")
    probs = dict(zip(SOURCES, values, strict=True))
    sources = {name: getattr(args, name) or [HUB[name]] for name in SOURCES if probs[name] > 0}
    try:
        check_writable(args.out)
    except StorageUnavailable as error:
        parser.exit(2, f"error: {error}\n")
    report = build(sources, args.out, total=args.pairs, probs=probs, seed=args.seed, split=args.split)
    print(json.dumps({k: v for k, v in report.items() if k != "problems"}, indent=1))
    print(f"wrote {args.out / 'rm_helpful.jsonl'} ({report['pairs']} pairs); "
          f"{len(report['problems'])} rows not converted, listed in {args.out / 'report.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
