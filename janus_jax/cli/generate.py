"""`janus-generate`: replies from a janus-jax or HF Mistral model, one prompt or a JSONL file.

    janus-generate --model=DIR --system="..." --prompt="..."
    janus-generate --model=RUN_DIR --input=rows.jsonl --output=replies.jsonl

Rows need `prompt` (and optionally `system`). Every output row is the input row plus `output`,
`finish_reason` and `input_line`; a rerun skips the input lines already in the output, and row i
always samples with seed + i, so an interrupted and resumed run writes what one run would have.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from janus_jax.cli.rows import InputRow, run_rows
from janus_jax.cli.sampling_args import add_sampling_args, sampling_from_args
from janus_jax.prompts import Template, get_template, render_prompt_ids
from janus_jax.sample import Sampler, SamplingParams


def run_file(
    sampler: Sampler, tokenizer, params: SamplingParams, args: argparse.Namespace, template: Template
) -> int:
    def prepare(row: InputRow) -> list[int]:
        ids = render_prompt_ids(tokenizer, row.system, row.prompt, template.name)
        sampler.check_request(ids, params, row.line)
        return ids

    def process(batch: list[tuple[InputRow, list[int]]]) -> list[dict]:
        row_params = [dataclasses.replace(params, seed=(params.seed + row.line) % 2**32) for row, _ in batch]
        completions = sampler.generate([ids for _, ids in batch], row_params)
        return [
            {**row.data, "output": template.strip_reply(c.text), "finish_reason": c.finish_reason}
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
    from janus_jax.serve.loading import load_from_args

    loaded = load_from_args(args)
    tok, template = loaded.tokenizer, get_template(loaded.template)
    sampler = Sampler(loaded.model, tok, eos_id=tok.eos_id, pad_id=tok.pad_id, mesh=loaded.mesh)
    del loaded  # the sampler holds its own per-layer copy of the layer weights: free the stacked ones
    if args.input is not None:
        return run_file(sampler, tok, params, args, template)
    ids = render_prompt_ids(tok, args.system, args.prompt, template.name)
    try:
        completion = sampler.generate([ids], params)[0]
    except ValueError as e:
        print(f"janus-generate: {e}", file=sys.stderr)
        return 2
    print(template.strip_reply(completion.text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
