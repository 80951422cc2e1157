"""``python -m eval {run, best-of-n, paper-table, rescore, compare, alpaca-lc, build-bench}``.

``run BENCH`` and ``best-of-n BENCH`` have one sub-command per registered benchmark
(``eval.benches.REGISTRY``), each with the common options below plus the benchmark's own
(``python -m eval run BENCH --help``). ``best-of-n`` answers with the reward model's pick of N policy
samples (eval/best_of_n.py) where ``run`` asks the evaluated model once. ``paper-table TABLE`` runs the
benchmarks of one of the paper's tables with its judges and settings and writes the table (eval/paper_tables.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eval.benches import benchmarks
from eval.benches.common import Option, RunSettings
from eval.stats import DEFAULT_LEVEL, DEFAULT_ROUNDS, DEFAULT_SEED
from janus_jax.paths import check_writable, to_path


def _add_model_args(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="model name at --base-url (or at OpenAI without --base-url)")
    who.add_argument("--checkpoint", metavar="DIR", help="a janus-train checkpoint, served by janus-serve for the run "
                     "(with $JANUS_SERVE_API_KEY as its key when set)")
    p.add_argument("--responses", metavar="FILE",
                   help="answers already generated (JSONL/JSON rows with id + response); with --model as its name")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint of the evaluated model (vLLM, janus-serve, ...)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the model's API key")
    p.add_argument("--open-model", action="store_true",
                   help="the --base-url server accepts repetition_penalty (vLLM, janus-serve); implied by --checkpoint")


def _add_best_of_n_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, metavar="DIR",
                   help="the policy sampled in this process: a janus-train workdir, an HF directory or a hub id")
    p.add_argument("--rm", required=True, metavar="DIR", help="the reward model that picks: a janus-train rm workdir")
    p.add_argument("--n", type=int, default=64, help="responses sampled per item (paper: 64)")
    p.add_argument("--sampling-seed", type=int, default=0, help="sample k of item line L uses seed + L * n + k")
    p.add_argument("--batch-size", type=int, default=16, help="sequences sampled or scored together")
    p.add_argument("--max-length", type=int, default=0, help="tokens per scored sequence (default: the RM's seq_len)")
    p.add_argument("--name", help="the name in the report (default: <policy>-best-of-<n>)")


def _add_judge_and_run_args(p: argparse.ArgumentParser, judge_required: bool, judge_help: str) -> None:
    p.add_argument("--judge", required=judge_required, help=judge_help)
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint of the judge (default: OpenAI)")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (reused to resume)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    p.add_argument("--max-reasks", type=int, default=5, help="re-asks of a judge reply without a readable verdict")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="bootstrap rounds")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="interval level")
    p.add_argument("--dry-run", action="store_true", help="print the calls and estimated cost; call nothing")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="cap the evaluated model's replies at N tokens (a smoke run: not the paper's protocol)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_per_bench(sub: argparse._SubParsersAction, command: str, help: str, verbs: str,
                   add_source_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """`command BENCH` with one sub-command per registered benchmark: its answers' source, judge and run
    options, then the benchmark's own options."""
    p = sub.add_parser(command, help=help)
    per_bench = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, bench in benchmarks().items():
        bp = per_bench.add_parser(name, help=bench.title, description=f"{bench.title}: {verbs}.")
        add_source_args(bp)
        needs_judge = bench.needs_judge(RunSettings())
        _add_judge_and_run_args(bp, needs_judge, "judge model name" + ("" if needs_judge else " (if any)"))
        _add_bench_options(bp, bench.options)


def _add_bench_options(p: argparse.ArgumentParser, options: tuple[Option, ...],
                       defaults: Mapping[str, Any] | None = None) -> None:
    """A benchmark's own ``--options``; ``defaults`` (by dest) replaces the benchmark's defaults."""
    for option in options:
        default = (defaults or {}).get(option.dest, option.default)
        kwargs = {"default": default, "help": option.help, "dest": option.dest}
        if default != option.default:
            kwargs["help"] += f" (the paper's: {default})"
        for key in ("choices", "type", "metavar"):
            if getattr(option, key) is not None:
                kwargs[key] = getattr(option, key)
        p.add_argument(f"--{option.name}", **kwargs)


def _settings(args: argparse.Namespace, open_model: bool, bench_name: str | None = None) -> RunSettings:
    bench = benchmarks()[bench_name or args.bench]
    return RunSettings(
        seed=args.seed, rounds=args.rounds, level=args.level, open_model=open_model,
        max_new_tokens=args.max_new_tokens,
        options={option.dest: getattr(args, option.dest) for option in bench.options},
    )


def _judge(args: argparse.Namespace):
    from eval.runner import JudgeSpec

    if not args.judge:
        return None
    return JudgeSpec(args.judge, base_url=args.judge_base_url, api_key_env=args.judge_api_key_env,
                     max_reasks=args.max_reasks, concurrency=args.concurrency)


def _report(evaluate: Callable[[], dict], out: str) -> int:
    """Run, then print the summary; a run with no score prints what it has and exits 1."""
    from eval.runner import NothingUsable

    try:
        scores = evaluate()
    except NothingUsable as error:
        summary = to_path(out) / "scores.json"
        if summary.exists():
            _print_summary(json.loads(summary.read_text()), out)
        print(f"error: {error}", file=sys.stderr)
        return 1
    _print_summary(scores, out)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from eval.runner import ModelSpec, plan, run

    if args.checkpoint and args.responses:
        raise SystemExit("--responses goes with --model (the name to report), not --checkpoint")
    name = args.model or Path(args.checkpoint).resolve().name
    settings = _settings(args, open_model=bool(args.checkpoint or args.open_model))
    model = ModelSpec(name, base_url=args.base_url, checkpoint=args.checkpoint, responses_file=args.responses,
                      api_key_env=args.api_key_env)
    judge = _judge(args)
    if args.dry_run:
        _print_plan(plan(args.bench, args.out, model, judge, settings, limit=args.limit))
        return 0
    return _report(lambda: run(args.bench, args.out, model, judge, settings, limit=args.limit,
                               progress=not args.quiet), args.out)


def _cmd_best_of_n(args: argparse.Namespace) -> int:
    from eval.best_of_n import BestOfN, plan_best_of_n, run_best_of_n

    if args.n < 1 or args.batch_size < 1:
        raise ValueError("--n and --batch-size must be at least 1")
    settings = _settings(args, open_model=True)  # sampled here, with the repetition penalty of open models
    spec = BestOfN(args.policy, args.rm, args.n, seed=args.sampling_seed, batch_size=args.batch_size,
                   max_length=args.max_length, name=args.name)
    judge = _judge(args)
    if not args.quiet:  # sampling progress: rows written, as janus-best-of-n logs them
        logging.getLogger("janus_jax.cli.rows").setLevel(logging.INFO)
    if args.dry_run:
        _print_plan(plan_best_of_n(args.bench, args.out, spec, judge, settings, limit=args.limit))
        return 0
    return _report(lambda: run_best_of_n(args.bench, args.out, spec, judge, settings, limit=args.limit,
                                         progress=not args.quiet), args.out)


def _print_plan(result: dict) -> None:
    def usd(value: float | None) -> str:
        return "n/a (no price known)" if value is None else f"about ${value:.2f}"

    gen, judge = result["generation"], result["judge"]
    print(f"dry run: {result['benchmark']}, {result['items']} items ({result['input_problems']})")
    if "sampling" in result:  # best-of-n: sampled and scored in this process
        bo, p = result["sampling"], result["sampling"]["params"]
        print(f"  sampling ({bo['policy']}, in this process): {bo['samples']} samples = {bo['items_to_sample']} "
              f"items x {bo['n']} ({bo['selected_before']} items selected before), <={p['max_new_tokens']} new "
              f"tokens each; temperature {p['temperature']}, top-p {p['top_p']}, repetition penalty "
              f"{p['repetition_penalty']}, seed {p['seed']}")
        print(f"  reward model ({bo['rm']}): {bo['samples']} scores, the highest of each item's {bo['n']} kept")
    else:
        print(f"  generation ({gen['model']}): {gen['calls']} calls ({gen['answered_before']} answered before), "
              f"~{gen['prompt_tokens']} prompt + <={gen['completion_tokens']} completion tokens, "
              f"{usd(gen['cost_usd'])}")
    print(f"  judge ({judge['model']}): {judge['calls']} calls, ~{judge['prompt_tokens']} prompt + "
          f"<={judge['completion_tokens']} completion tokens, {usd(judge['cost_usd'])}")
    print("  estimates: ~4 characters per token; answers and judge replies at their max_tokens (an upper bound); "
          "re-asks of unreadable replies come on top; nothing was called")


def _add_paper_tables(sub: argparse._SubParsersAction) -> None:
    """`paper-table TABLE` with one sub-command per table of the paper, each with the options of its benchmarks
    at the paper's values."""
    from eval.paper_tables import TABLES

    p = sub.add_parser("paper-table", help="run the benchmarks of one of the paper's tables on a checkpoint (or a "
                       "served model) and write the table beside the paper's Janus 7B row")
    per_table = p.add_subparsers(dest="table", required=True, metavar="TABLE")
    for name, table in TABLES.items():
        benches = ", ".join(r.bench for r in table.benches)
        tp = per_table.add_parser(name, help=f"{table.title} ({benches})",
                                  description=f"{table.title}: {benches} on one model, with the paper's judges "
                                  "and settings; OUT/<bench>/ per benchmark, then OUT/table.md and table.json.")
        who = tp.add_mutually_exclusive_group(required=True)
        who.add_argument("--checkpoint", metavar="DIR",
                         help="what janus-serve --model takes (a janus-train workdir, an HF directory); served once "
                         "for all the table's benchmarks (with $JANUS_SERVE_API_KEY as its key when set)")
        who.add_argument("--model", help="a model already served at --base-url (vLLM, janus-serve, ...); it "
                         "must accept repetition_penalty, which the paper's settings send")
        tp.add_argument("--base-url", help="OpenAI-compatible endpoint serving --model")
        tp.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding its API key")
        paper_judges = ", ".join(f"{r.bench} {r.judge}" for r in table.benches if r.judge) or "none"
        _add_judge_and_run_args(tp, False, f"one judge for every benchmark of the table (default: the paper's: "
                                f"{paper_judges})")
        for recipe in table.benches:
            _add_bench_options(tp, benchmarks()[recipe.bench].options, recipe.options)


def _cmd_paper_table(args: argparse.Namespace) -> int:
    from eval.paper_tables import get_table, judges, plan_table, run_table, table_markdown, table_model

    table = get_table(args.table)
    model = table_model(args.checkpoint, args.model, base_url=args.base_url, api_key_env=args.api_key_env)
    settings = {r.bench: _settings(args, open_model=True, bench_name=r.bench) for r in table.benches}
    judge_specs = judges(table, settings, args.judge, base_url=args.judge_base_url,
                         api_key_env=args.judge_api_key_env, max_reasks=args.max_reasks, concurrency=args.concurrency)
    if args.dry_run:
        result = plan_table(table, args.out, model, judge_specs, settings, limit=args.limit)
        for bench_plan in result["benchmarks"]:
            _print_plan(bench_plan)
        gen, judge = result["total"]["generation"], result["total"]["judge"]
        unpriced = f" (no price known for the judge of {', '.join(judge['unpriced'])})" if judge["unpriced"] else ""
        print(f"total ({table.title}, {len(result['benchmarks'])} benchmarks): generation {gen['calls']} calls, "
              f"~{gen['prompt_tokens']} prompt + <={gen['completion_tokens']} completion tokens (janus-serve); "
              f"judge {judge['calls']} calls, ~{judge['prompt_tokens']} prompt + <={judge['completion_tokens']} "
              f"completion tokens, about ${judge['cost_usd']:.2f}{unpriced}")
        return 0
    result = run_table(table, args.out, model, judge_specs, settings, limit=args.limit,
                       progress=not args.quiet)
    print(table_markdown(result))
    print(f"table: {args.out}/table.md, table.json")
    for bench, reason in result["failed"].items():
        print(f"error: benchmark {bench} produced nothing usable ({reason})", file=sys.stderr)
    return 1 if result["failed"] else 0


def _print_summary(scores: dict, out: str) -> None:
    from eval.report import fmt

    print(f"{scores['benchmark']} / {scores['model']}: {scores['metric']} = {fmt(scores.get('overall'))}")
    for kind, ids in (scores.get("problems") or {}).items():
        print(f"  {kind}: {len(ids)}")
    if scores.get("failure_reasons"):
        print("top failure reasons:")
        for reason in scores["failure_reasons"]:
            print(f"  {reason['count']}x {reason['reason']}")
    print(f"report: {to_path(out) / 'report.md'}")


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
    _add_per_bench(sub, "run", "generate, judge, aggregate and report one benchmark", "generate, judge, report",
                   _add_model_args)
    _add_per_bench(sub, "best-of-n", "sample N answers per item from a policy, keep the reward model's pick, judge "
                   "and report (the paper's Best-of-N)", "best-of-N sampling, judge, report", _add_best_of_n_args)
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
    _add_paper_tables(sub)
    from eval.build_bench import add_parser as add_build_bench

    add_build_bench(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    commands = {"run": _cmd_run, "best-of-n": _cmd_best_of_n, "rescore": _cmd_rescore, "compare": _cmd_compare,
                "alpaca-lc": _cmd_alpaca_lc, "paper-table": _cmd_paper_table}
    try:
        if getattr(args, "out", None) and not getattr(args, "dry_run", False):
            check_writable(args.out)  # a gs:// output that cannot be written fails before any call
        if args.command in commands:
            return commands[args.command](args)
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
