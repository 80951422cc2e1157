"""`janus-best-of-n`: pick the best of N responses per (system, prompt) with a trained reward model.

    janus-best-of-n --rm=runs/rm --input=candidates.jsonl --output=best.jsonl
    janus-best-of-n --rm=runs/rm --policy=runs/dpo --n=8 --input=prompts.jsonl --output=best.jsonl

Input rows carry `prompt` (and optionally `system`) plus either a `responses` list, or, with
`--policy`, nothing more: then N responses are sampled from the policy (any `load_model` source, prompted
in the template it was trained with; the paper's sampling setting by default). Every output row is the
input row plus `responses`, `rewards`, `best_index`, `best_response` and `input_line`. A rerun skips the
input lines already in the output, and row i samples with seeds derived from (seed, i), so an interrupted
and resumed run writes what one run would have. Malformed rows are reported by line and counted.
`python -m eval best-of-n` runs the same job (`select_file`) on a benchmark's items.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from janus_jax.best_of_n import RewardScorer, load_reward_model, run_settings, select_best
from janus_jax.cli.rows import run_rows
from janus_jax.cli.sampling_args import add_sampling_args, sampling_from_args
from janus_jax.sample import SamplingParams
from janus_jax.tokenizer import load_tokenizer


def _row_responses(row, policy: bool) -> list[str]:
    responses = row.data.get("responses")
    if policy:
        if responses is not None:
            raise ValueError("has 'responses' but --policy samples them; drop one of the two")
        return []
    if not isinstance(responses, list) or not responses:
        raise ValueError("field 'responses' must be a non-empty list of strings (or pass --policy to sample)")
    bad = [k for k, r in enumerate(responses) if not isinstance(r, str)]
    if bad:
        raise ValueError(f"responses{bad} must be strings")
    return responses


def _sample(sampler, tokenizer, params, rows, n: int, template: str) -> list[list[str]]:
    """N responses per row in one batch; row at input line L, sample k uses seed (seed, L, k)."""
    from janus_jax.prompts import render_prompt_ids

    prompts, per_sample = [], []
    for row in rows:
        ids = render_prompt_ids(tokenizer, row.system, row.prompt, template)
        for k in range(n):
            prompts.append(ids)
            per_sample.append(dataclasses.replace(params, seed=(params.seed + row.line * n + k) % 2**32))
    texts = [c.text for c in sampler.generate(prompts, per_sample)]
    return [texts[i * n : (i + 1) * n] for i in range(len(rows))]


def select_file(
    rm: str | os.PathLike,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    policy: str | os.PathLike | None = None,
    n: int = 4,
    sampling: SamplingParams | None = None,
    tokenizer: str | None = None,
    max_length: int = 0,
    batch_size: int = 16,
) -> int:
    """Best-of-N over a JSONL file (see the module docstring); returns the exit status (1: rows refused).

    With `policy`, N responses per row are sampled with `sampling` (default: the paper's setting) in the
    policy's prompt template; the reward model scores them in its own. `tokenizer` and `max_length`
    default to the reward model's.
    """
    from janus_jax.prompts import render_prompt_ids
    from janus_jax.sample import JANUS_SAMPLING

    settings = run_settings(rm)
    tok = load_tokenizer(tokenizer if tokenizer is not None else settings["tokenizer"] or None)
    scorer = RewardScorer(
        load_reward_model(rm), tok, max_length=max_length or settings["max_length"],
        batch_size=batch_size, template=settings["template"],
    )
    sampler = params = template = None
    if policy:
        from janus_jax.sample import Sampler
        from janus_jax.serve.loading import load_for_inference

        params = sampling or JANUS_SAMPLING
        params.validate()
        loaded = load_for_inference(str(policy), tokenizer=tok.name)
        template = loaded.template
        sampler = Sampler(loaded.model, tok, eos_id=tok.eos_id, pad_id=tok.pad_id)
        del loaded  # the sampler holds its own per-layer copy of the layer weights: free the stacked ones

    def prepare(row) -> list[str]:
        responses = _row_responses(row, sampler is not None)
        if not scorer.prompt_fits(row.system, row.prompt):
            raise ValueError(f"the prompt leaves no room for a response in {scorer.max_length} tokens")
        if sampler is not None:
            sampler.check_request(render_prompt_ids(tok, row.system, row.prompt, template), params, row.line)
        return responses

    def process(batch) -> list[dict]:
        if sampler is not None:
            sampled = _sample(sampler, tok, params, [row for row, _ in batch], n, template)
            batch = [(row, responses) for (row, _), responses in zip(batch, sampled, strict=True)]
        picks = select_best(scorer, [(row.system, row.prompt, responses) for row, responses in batch])
        return [
            {
                **row.data,
                "responses": responses,
                "rewards": pick.rewards,
                "best_index": pick.best_index,
                "best_response": pick.best_response,
            }
            for (row, responses), pick in zip(batch, picks, strict=True)
        ]

    rows_per_batch = max(1, batch_size // n) if sampler is not None else batch_size
    return run_rows(
        Path(input_path), Path(output_path), prepare, process, rows_per_batch=rows_per_batch, verb="scored"
    )


def run_file(args: argparse.Namespace) -> int:
    return select_file(
        args.rm, args.input, args.output, policy=args.policy, n=args.n,
        sampling=sampling_from_args(args) if args.policy else None, tokenizer=args.tokenizer,
        max_length=args.max_length, batch_size=args.batch_size,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="janus-best-of-n", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rm", required=True, metavar="DIR", help="reward model: a janus-train rm workdir")
    parser.add_argument("--input", required=True, help="JSONL rows with 'prompt', optional 'system', 'responses'")
    parser.add_argument("--output", required=True, help="JSONL file the selections are appended to (resumable)")
    parser.add_argument("--policy", metavar="DIR", help="sample responses from this policy (workdir, HF dir or hub id)")
    parser.add_argument("--n", type=int, default=4, help="responses sampled per prompt (with --policy)")
    parser.add_argument("--tokenizer", help="default: the tokenizer the reward model was trained with")
    parser.add_argument("--max-length", type=int, default=0, help="tokens per scored sequence (default: RM seq_len)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences scored (or sampled) together")
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        return run_file(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"janus-best-of-n: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
