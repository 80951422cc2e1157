"""``python -m eval {run, rescore, compare, alpaca-lc, build-bench, rtp}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from eval.benches.common import RunSettings
from eval.stats import DEFAULT_LEVEL, DEFAULT_ROUNDS, DEFAULT_SEED


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate, judge, aggregate and report one benchmark")
    p.add_argument("bench", choices=["multifaceted", "pairwise", "mt_bench", "arena_hard", "alpaca_eval"])
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="model name at --base-url (or at OpenAI without --base-url)")
    who.add_argument("--checkpoint", metavar="DIR", help="a janus-train checkpoint, served by janus-serve for the run")
    p.add_argument("--responses", metavar="FILE",
                   help="answers already generated (JSONL/JSON rows with id + response); with --model as its name")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint of the evaluated model (vLLM, janus-serve, ...)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the model's API key")
    p.add_argument("--judge", required=True, help="judge model name")
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint of the judge (default: OpenAI)")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (reused to resume)")
    p.add_argument("--bench-file", metavar="FILE", help="Multifaceted Bench as a local file (default: the hub copy)")
    p.add_argument("--baseline", metavar="FILE", help="pairwise: the baseline's answers (e.g. its responses.jsonl)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    p.add_argument("--runs", type=int, default=3, help="Multifaceted Bench judge runs averaged (paper: 3)")
    p.add_argument("--max-reasks", type=int, default=5, help="re-asks of a judge reply without a readable score")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="bootstrap rounds")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="interval level")
    p.add_argument("--lc-variant", choices=["minimal", "noreg", "v1"], default="minimal",
                   help="AlpacaEval length-controlled GLM (noreg/v1 need --lc-assets)")
    p.add_argument("--lc-assets", metavar="DIR",
                   help="directory with AlpacaEval's instruction_difficulty.csv and/or df_gamed.csv")
    p.add_argument("--arena-resample", choices=["question", "battle"], default="question")
    p.add_argument("--open-model", action="store_true",
                   help="the --base-url server accepts repetition_penalty (vLLM, janus-serve); implied by --checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_run(args: argparse.Namespace) -> int:
    from eval.runner import JudgeSpec, ModelSpec, run

    if args.checkpoint and args.responses:
        raise SystemExit("--responses goes with --model (the name to report), not --checkpoint")
    name = args.model or Path(args.checkpoint).resolve().name
    settings = RunSettings(
        runs=args.runs, seed=args.seed, rounds=args.rounds, level=args.level,
        open_model=bool(args.checkpoint or args.open_model), lc_variant=args.lc_variant, lc_assets=args.lc_assets,
        arena_resample=args.arena_resample,
    )
    model = ModelSpec(name, base_url=args.base_url, checkpoint=args.checkpoint, responses_file=args.responses,
                      api_key_env=args.api_key_env)
    judge = JudgeSpec(args.judge, base_url=args.judge_base_url, api_key_env=args.judge_api_key_env,
                      max_reasks=args.max_reasks, concurrency=args.concurrency)
    scores = run(args.bench, args.out, model, judge, settings, bench_file=args.bench_file, limit=args.limit,
                 baseline_file=args.baseline, progress=not args.quiet)
    _print_summary(scores, args.out)
    return 0


def _print_summary(scores: dict, out: str) -> None:
    from eval.report import fmt

    print(f"{scores['benchmark']} / {scores['model']}: {scores['metric']} = {fmt(scores.get('overall'))}")
    for kind, ids in (scores.get("problems") or {}).items():
        print(f"  {kind}: {len(ids)}")
    print(f"report: {Path(out) / 'report.md'}")


def _cmd_rescore(args: argparse.Namespace) -> int:
    from eval.runner import rescore

    for directory in args.dirs:
        scores, changed = rescore(directory)
        print(f"{directory}: {changed} judge replies parsed differently")
        _print_summary(scores, directory)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from eval.report import write_report

    path = write_report(args.dirs, args.out)
    print(path.read_text().split("\n\n![")[0])
    print(f"\nreport: {path}")
    return 0


def _cmd_alpaca_lc(args: argparse.Namespace) -> int:
    from eval.alpaca_lc import LcAssets, annotations_to_arrays, length_controlled_winrate
    from eval.benchmarks import alpaca_instructions, read_records

    arrays = annotations_to_arrays(read_records(args.annotations), alpaca_instructions())
    assets = LcAssets.from_dir(args.lc_assets) if args.lc_assets else None
    metrics = length_controlled_winrate(**arrays, variant=args.variant, assets=assets)
    print(json.dumps(metrics, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description="Judged benchmarks, statistics and reports.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    p = sub.add_parser("rescore", help="re-parse stored judge replies and re-aggregate (no LLM calls)")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p = sub.add_parser("compare", help="put several run directories side by side in one report")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p = sub.add_parser("alpaca-lc", help="win rate and LC win rate of an AlpacaEval annotations file")
    p.add_argument("annotations", help="AlpacaEval annotations.json (output_1 = baseline, output_2 = model)")
    p.add_argument("--variant", choices=["minimal", "noreg", "v1"], default="minimal")
    p.add_argument("--lc-assets", metavar="DIR")
    from eval.build_bench import add_parser as add_build_bench
    from eval.rtp import add_parser as add_rtp

    add_build_bench(sub)
    add_rtp(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    commands = {"run": _cmd_run, "rescore": _cmd_rescore, "compare": _cmd_compare, "alpaca-lc": _cmd_alpaca_lc}
    if args.command in commands:
        return commands[args.command](args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
