"""`janus-generate`: replies from a janus-jax or HF Mistral model, one prompt or a JSONL file.

    janus-generate --hf=DIR --system="..." --prompt="..."
    janus-generate --checkpoint=DIR --input=rows.jsonl --output=replies.jsonl

Rows need `prompt` (and optionally `system`). Every output row is the input row plus `output`,
`finish_reason` and `input_line`; a rerun skips the input lines already in the output, and row i
always samples with seed + i, so an interrupted and resumed run writes what one run would have.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from janus_jax.sample import JANUS_SAMPLING, Sampler, SamplingParams

log = logging.getLogger("janus_jax.generate")


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    d = JANUS_SAMPLING
    group = parser.add_argument_group("sampling (defaults: the Janus paper's setting)")
    group.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    group.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    group.add_argument("--top-p", type=float, default=d.top_p)
    group.add_argument("--top-k", type=int, default=d.top_k, help="0 = off")
    group.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    params.validate()
    return params


@dataclasses.dataclass
class InputRow:
    line: int  # 1-based line number in the input file
    data: dict
    system: str
    prompt: str


def read_rows(path: Path, errors: list[str]) -> Iterator[InputRow]:
    """Valid rows of a JSONL file; each malformed line is described in `errors` (never silently skipped)."""
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{path}:{line_no}: not valid JSON ({e})")
                continue
            if not isinstance(data, dict):
                errors.append(f"{path}:{line_no}: expected a JSON object, got {type(data).__name__}")
                continue
            prompt, system = data.get("prompt"), data.get("system", "")
            if not isinstance(prompt, str) or not prompt.strip():
                errors.append(f"{path}:{line_no}: field 'prompt' is missing or not a non-empty string")
                continue
            if system is None:
                system = ""
            if not isinstance(system, str):
                errors.append(f"{path}:{line_no}: field 'system' must be a string")
                continue
            yield InputRow(line_no, data, system, prompt)


def done_lines(path: Path) -> set[int]:
    """Input lines already answered in `path`; a torn last line (from a kill) is cut off."""
    if not path.exists():
        return set()
    done: set[int] = set()
    good_bytes = 0
    with path.open("rb") as f:
        for raw in f:
            try:
                row = json.loads(raw)
                done.add(int(row["input_line"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                break
            if not raw.endswith(b"\n"):
                break
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        log.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return done


def run_rows(
    input_path: Path,
    output_path: Path,
    prepare: Callable[[InputRow], Any],
    process: Callable[[list[tuple[InputRow, Any]]], list[dict]],
    *,
    rows_per_batch: int,
    verb: str,
) -> int:
    """A resumable JSONL job: every input row not yet in the output is prepared, then processed in
    batches whose records are appended (and fsynced) one batch at a time.

    `prepare(row)` raises ValueError for a row that cannot be done (reported with its line, counted);
    `process(batch)` returns one record per (row, prepared) pair, and the row's `input_line` is added.
    Returns the exit status: 1 if any row was malformed or refused.
    """
    errors: list[str] = []
    output_path.parent.mkdir(parents=True, exist_ok=True)
    done = done_lines(output_path)
    todo = []
    for row in read_rows(input_path, errors):
        if row.line in done:
            continue
        try:
            todo.append((row, prepare(row)))
        except ValueError as e:
            errors.append(f"{input_path}:{row.line}: {e}")
    log.info("%d rows to do, %d already in %s, %d malformed", len(todo), len(done), output_path, len(errors))
    written = 0
    with output_path.open("a", encoding="utf-8") as out:
        for start in range(0, len(todo), rows_per_batch):
            batch = todo[start : start + rows_per_batch]
            for (row, _), record in zip(batch, process(batch), strict=True):
                out.write(json.dumps({**record, "input_line": row.line}, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            written += len(batch)
            log.info("%d / %d rows written", written, len(todo))
    for message in errors:
        print(message, file=sys.stderr)
    if errors:
        print(f"{len(errors)} input row(s) not {verb} (listed above)", file=sys.stderr)
    return 1 if errors else 0


def run_file(sampler: Sampler, tokenizer, params: SamplingParams, args: argparse.Namespace) -> int:
    from janus_jax.prompts import render_prompt_ids

    def prepare(row: InputRow) -> list[int]:
        ids = render_prompt_ids(tokenizer, row.system, row.prompt)
        sampler.check_request(ids, params, row.line)
        return ids

    def process(batch: list[tuple[InputRow, list[int]]]) -> list[dict]:
        row_params = [dataclasses.replace(params, seed=(params.seed + row.line) % 2**32) for row, _ in batch]
        completions = sampler.generate([ids for _, ids in batch], row_params)
        return [
            {**row.data, "output": c.text, "finish_reason": c.finish_reason}
            for (row, _), c in zip(batch, completions, strict=True)
        ]

    return run_rows(
        Path(args.input), Path(args.output), prepare, process, rows_per_batch=args.batch_size, verb="generated"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from janus_jax.serve.loading import add_model_args

    parser = argparse.ArgumentParser(prog="janus-generate", description=__doc__.strip().splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--system", default="", help="system message (single reply)")
    parser.add_argument("--prompt", help="the instruction (single reply, printed to stdout)")
    parser.add_argument("--input", help="JSONL rows with 'prompt' and optional 'system'")
    parser.add_argument("--output", help="JSONL file the replies are appended to (resumable)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows decoded together")
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    if (args.prompt is None) == (args.input is None):
        parser.error("give either --prompt (one reply) or --input/--output (a file)")
    if args.input is not None and not args.output:
        parser.error("--input needs --output")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        params = sampling_from_args(args)
    except ValueError as e:
        print(f"janus-generate: {e}", file=sys.stderr)
        return 2
    from janus_jax.prompts import render_prompt_ids
    from janus_jax.serve.loading import load_from_args

    loaded = load_from_args(args)
    tok = loaded.tokenizer
    sampler = Sampler(loaded.model, tok, eos_id=tok.eos_id, pad_id=tok.pad_id, mesh=loaded.mesh)
    if args.input is not None:
        return run_file(sampler, tok, params, args)
    ids = render_prompt_ids(tok, args.system, args.prompt)
    try:
        completion = sampler.generate([ids], params)[0]
    except ValueError as e:
        print(f"janus-generate: {e}", file=sys.stderr)
        return 2
    print(completion.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
