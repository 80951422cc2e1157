"""``python -m eval {run, rescore, compare, alpaca-lc, build-bench}``.

``run BENCH`` has one sub-command per registered benchmark (``eval.benches.REGISTRY``), each with the
common options below plus the benchmark's own (``python -m eval run BENCH --help``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from eval.benches import benchmarks
from eval.benches.common import Benchmark, RunSettings
from eval.stats import DEFAULT_LEVEL, DEFAULT_ROUNDS, DEFAULT_SEED


def _add_common_run_args(p: argparse.ArgumentParser, bench: Benchmark) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="model name at --base-url (or at OpenAI without --base-url)")
    who.add_argument("--checkpoint", metavar="DIR", help="a janus-train checkpoint, served by janus-serve for the run "
                     "(with $JANUS_SERVE_API_KEY as its key when set)")
    p.add_argument("--responses", metavar="FILE",
                   help="answers already generated (JSONL/JSON rows with id + response); with --model as its name")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint of the evaluated model (vLLM, janus-serve, ...)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the model's API key")
    needs_judge = bench.needs_judge(RunSettings())
    p.add_argument("--judge", required=needs_judge, help="judge model name" + ("" if needs_judge else " (if any)"))
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint of the judge (default: OpenAI)")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (reused to resume)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    p.add_argument("--max-reasks", type=int, default=5, help="re-asks of a judge reply without a readable verdict")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="bootstrap rounds")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="interval level")
    p.add_argument("--open-model", action="store_true",
                   help="the --base-url server accepts repetition_penalty (vLLM, janus-serve); implied by --checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the calls and estimated cost; call nothing")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="cap the evaluated model's replies at N tokens (a smoke run: not the paper's protocol)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate, judge, aggregate and report one benchmark")
    per_bench = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, bench in benchmarks().items():
        bp = per_bench.add_parser(name, help=bench.title, description=f"{bench.title}: generate, judge, report.")
        _add_common_run_args(bp, bench)
        for option in bench.options:
            kwargs = {"default": option.default, "help": option.help, "dest": option.dest}
            for key in ("choices", "type", "metavar"):
                if getattr(option, key) is not None:
                    kwargs[key] = getattr(option, key)
            bp.add_argument(f"--{option.name}", **kwargs)


def _cmd_run(args: argparse.Namespace) -> int:
    from eval.runner import JudgeSpec, ModelSpec, NothingUsable, plan, run

    if args.checkpoint and args.responses:
        raise SystemExit("--responses goes with --model (the name to report), not --checkpoint")
    bench = benchmarks()[args.bench]
    name = args.model or Path(args.checkpoint).resolve().name
    settings = RunSettings(
        seed=args.seed, rounds=args.rounds, level=args.level, open_model=bool(args.checkpoint or args.open_model),
        max_new_tokens=args.max_new_tokens,
        options={option.dest: getattr(args, option.dest) for option in bench.options},
    )
    model = ModelSpec(name, base_url=args.base_url, checkpoint=args.checkpoint, responses_file=args.responses,
                      api_key_env=args.api_key_env)
    judge = None
    if args.judge:
        judge = JudgeSpec(args.judge, base_url=args.judge_base_url, api_key_env=args.judge_api_key_env,
                          max_reasks=args.max_reasks, concurrency=args.concurrency)
    if args.dry_run:
        _print_plan(plan(args.bench, args.out, model, judge, settings, limit=args.limit))
        return 0
    try:
        scores = run(args.bench, args.out, model, judge, settings, limit=args.limit, progress=not args.quiet)
    except NothingUsable as error:
        summary = Path(args.out) / "scores.json"
        if summary.exists():
            _print_summary(json.loads(summary.read_text()), args.out)
        print(f"error: {error}", file=sys.stderr)
        return 1
    _print_summary(scores, args.out)
    return 0


def _print_plan(result: dict) -> None:
    def usd(value: float | None) -> str:
        return "n/a (no price known)" if value is None else f"about ${value:.2f}"

    gen, judge = result["generation"], result["judge"]
    print(f"dry run: {result['benchmark']}, {result['items']} items ({result['input_problems']})")
    print(f"  generation ({gen['model']}): {gen['calls']} calls ({gen['answered_before']} answered before), "
          f"~{gen['prompt_tokens']} prompt + <={gen['completion_tokens']} completion tokens, {usd(gen['cost_usd'])}")
    print(f"  judge ({judge['model']}): {judge['calls']} calls, ~{judge['prompt_tokens']} prompt + "
          f"<={judge['completion_tokens']} completion tokens, {usd(judge['cost_usd'])}")
    print("  estimates: ~4 characters per token; answers and judge replies at their max_tokens (an upper bound); "
          "re-asks of unreadable replies come on top; nothing was called")


def _print_summary(scores: dict, out: str) -> None:
    from eval.report import fmt

    print(f"{scores['benchmark']} / {scores['model']}: {scores['metric']} = {fmt(scores.get('overall'))}")
    for kind, ids in (scores.get("problems") or {}).items():
        print(f"  {kind}: {len(ids)}")
    if scores.get("failure_reasons"):
        print("top failure reasons:")
        for reason in scores["failure_reasons"]:
            print(f"  {reason['count']}x {reason['reason']}")
    print(f"report: {Path(out) / 'report.md'}")


def _cmd_rescore(args: argparse.Namespace) -> int:
    from eval.runner import rescore, unusable_reason

    status = 0
    for directory in args.dirs:
        scores, changed = rescore(directory)
        print(f"{directory}: {changed} judge replies parsed differently")
        _print_summary(scores, directory)
        reason = unusable_reason(scores)
        if reason:
            print(f"error: {reason}", file=sys.stderr)
            status = 1
    return status


def _cmd_compare(args: argparse.Namespace) -> int:
    from eval.report import write_report

    path = write_report(args.dirs, args.out)
    print(path.read_text().split("\n\n![")[0])
    print(f"\nreport: {path}")
    return 0


def _cmd_alpaca_lc(args: argparse.Namespace) -> int:
    from eval.alpaca_lc import annotations_to_arrays, length_controlled_winrate
    from eval.benches.alpaca_eval import LC_ASSETS, LC_VARIANT, alpaca_instructions, lc_setup
    from janus_jax.jsonio import read_records

    arrays = annotations_to_arrays(read_records(args.annotations), alpaca_instructions())
    variant, assets, origin = lc_setup(RunSettings(options={LC_VARIANT.dest: args.variant,
                                                            LC_ASSETS.dest: args.lc_assets}))
    metrics = length_controlled_winrate(**arrays, variant=variant, assets=assets)
    print(json.dumps({**metrics, "lc_assets": origin}, indent=2, default=str))
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
    p.add_argument("--variant", choices=["auto", "minimal", "noreg", "v1"], default="auto",
                   help="LC GLM; auto: v1 when AlpacaEval's df_gamed.csv is at hand, else minimal")
    p.add_argument("--lc-assets", metavar="DIR|hub", help="AlpacaEval's LC files: a directory, or 'hub'")
    from eval.build_bench import add_parser as add_build_bench

    add_build_bench(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    commands = {"run": _cmd_run, "rescore": _cmd_rescore, "compare": _cmd_compare, "alpaca-lc": _cmd_alpaca_lc}
    try:
        if args.command in commands:
            return commands[args.command](args)
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
