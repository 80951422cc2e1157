"""The sampling flags of janus-generate and janus-best-of-n (defaults: the Janus paper's setting)."""

from __future__ import annotations

import argparse

from janus_jax.sample import JANUS_SAMPLING, SamplingParams


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    d = JANUS_SAMPLING
    group = parser.add_argument_group("sampling (defaults: the Janus paper's setting)")
    group.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    group.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help="0 = the most likely token after the repetition penalty (plain greedy: also --repetition-penalty=1)",
    )
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
