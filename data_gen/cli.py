"""Command line: ``python -m data_gen run --instructions SRC --out DIR --model NAME [options]``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from data_gen.pipeline import (
    DEFAULT_STAGES,
    STAGES,
    PipelineConfig,
    dumps,
    estimate,
    format_table,
    run_pipeline,
    unusable_reason,
)
from janus_jax.paths import check_writable


def _stages(text: str) -> tuple[str, ...]:
    if text == "all":
        return STAGES
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    return stages


def _price(text: str) -> tuple[float, float]:
    try:
        prompt, completion = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--price wants IN,OUT in USD per million tokens, got {text!r}") from None
    return prompt, completion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_gen",
        description="Synthesize the Multifaceted Collection with any OpenAI-compatible LLM, resumably.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) the pipeline")
    run.add_argument(
        "--instructions",
        action="append",
        default=[],
        metavar="SRC",
        help="instruction source: a .jsonl/.json/.parquet/.csv file or hf:NAME[:SPLIT] (repeatable)",
    )
    run.add_argument("--out", required=True, help="output directory, local or gs://BUCKET/DIR (reuse it to resume)")
    run.add_argument("--model", required=True, help="model name sent to the endpoint, e.g. gpt-4-0125-preview")
    run.add_argument(
        "--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)"
    )
    run.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable that holds the API key (default OPENAI_API_KEY)",
    )
    run.add_argument(
        "--stages",
        type=_stages,
        default=DEFAULT_STAGES,
        help=f"comma-separated stages, or 'all' (default: {','.join(DEFAULT_STAGES)}; "
        f"'rubrics' adds the bench rubrics)",
    )
    run.add_argument("--limit", type=int, default=None, help="use only the first N kept instructions")
    run.add_argument("--dry-run", action="store_true", help="print calls and estimated cost; call nothing")
    run.add_argument("--seed", type=int, default=0, help="seed for seed examples and pair choices")
    run.add_argument(
        "--decontaminate",
        action="append",
        default=[],
        metavar="FILE",
        help="benchmark prompts to exclude (exact or 13-gram overlap; repeatable)",
    )
    run.add_argument("--cache", default=None, help="LLM cache file (default OUT/cache/llm_cache.jsonl)")
    run.add_argument("--max-concurrency", type=int, default=64)
    run.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
    run.add_argument("--tpm", type=float, default=None, help="tokens per minute limit")
    run.add_argument("--max-retries", type=int, default=6, help="retries per call on 429/5xx/timeouts")
    run.add_argument(
        "--retry-backoff-s",
        type=float,
        default=1.0,
        help="first retry delay without Retry-After; doubles per retry (with jitter)",
    )
    run.add_argument("--timeout-s", type=float, default=600.0, help="per-request timeout")
    run.add_argument(
        "--max-reasks", type=int, default=2, help="times an empty, truncated or unparseable reply is asked again"
    )
    run.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="cap every stage's max_tokens (for small local models; replies cut short are re-asked)",
    )
    run.add_argument(
        "--price",
        type=_price,
        default=None,
        metavar="IN,OUT",
        help="USD per million prompt,completion tokens for --model (overrides the table)",
    )
    run.add_argument("--batch", action="store_true", help="send the calls through the OpenAI Batch API")
    run.add_argument("--batch-poll-s", type=float, default=30.0, help="seconds between Batch API polls")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _print_estimate(result: dict[str, Any]) -> None:
    rows = [
        [
            name,
            s["calls"],
            s["done_before"],
            s["prompt_tokens"],
            s["completion_tokens"],
            "n/a" if s["cost_usd"] is None else f"{s['cost_usd']:.2f}",
        ]
        for name, s in result["stages"].items()
    ]
    print(f"dry run: {result['instructions']} instructions, model {result['model']}")
    print(format_table(["stage", "calls", "done", "prompt tok (est)", "completion tok (est)", "cost USD (est)"], rows))
    if result["total_cost_usd"] is None:
        print(f"total: {result['total_calls']} calls; no price known for {result['model']} (pass --price IN,OUT)")
    else:
        print(
            f"total: {result['total_calls']} calls, about ${result['total_cost_usd']:.2f} "
            f"(Batch API: about ${result['batch_cost_usd']:.2f}); cache hits would cost nothing"
        )


def _print_summary(manifest: dict[str, Any]) -> None:
    rows = []
    for name, stage in manifest.get("stages", {}).items():
        client = stage["client"]
        tokens = client.get("prompt_tokens", 0) + client.get("completion_tokens", 0)
        cost = "n/a" if client.get("unpriced") else f"{client.get('cost_usd', 0):.4f}"
        rows.append(
            [
                name,
                stage["tasks"],
                stage["done_before"],
                stage["written"],
                stage["failed"],
                client.get("calls", 0),
                client.get("cache_hits", 0),
                tokens,
                cost,
            ]
        )
    if rows:
        print(
            format_table(
                [
                    "stage",
                    "tasks",
                    "done before",
                    "new rows",
                    "failed",
                    "API calls",
                    "cache hits",
                    "tokens",
                    "cost USD",
                ],
                rows,
            )
        )
    counts = manifest.get("instruction_counts")
    if counts:
        print("instructions: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    sets = manifest["set_counts"]
    print(
        f"preference sets: {sets['sets_expected']} expected = {sets['sets_in_sft']} in SFT + "
        f"{sets['sets_failed']} failed (see failures.jsonl) + {sets['sets_not_run']} not run yet"
    )
    if "splits" in manifest:
        print("splits: " + ", ".join(f"{name}={info['rows']}" for name, info in manifest["splits"].items()))
    if manifest.get("failure_reasons"):
        print("top failure reasons:")
        for failure in manifest["failure_reasons"]:
            print(f"  {failure['count']}x {failure['stage']}: {failure['reason']}")


def _pipeline_config(args: argparse.Namespace, argv: list[str] | None) -> PipelineConfig:
    """The run's settings; bad combinations (e.g. an unknown stage) raise ValueError."""
    return PipelineConfig(
        out=args.out,
        model=args.model,
        sources=args.instructions,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        stages=args.stages,
        limit=args.limit,
        seed=args.seed,
        decontaminate=args.decontaminate,
        cache_path=args.cache,
        max_concurrency=args.max_concurrency,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        max_retries=args.max_retries,
        retry_backoff_s=args.retry_backoff_s,
        timeout_s=args.timeout_s,
        max_reasks=args.max_reasks,
        max_tokens_cap=args.max_tokens,
        prices={args.model: args.price} if args.price else None,
        batch=args.batch,
        batch_poll_s=args.batch_poll_s,
        progress=not args.no_progress,
        command=["python", "-m", "data_gen", *(argv if argv is not None else sys.argv[1:])],
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("openai").setLevel(logging.WARNING)
    try:
        config = _pipeline_config(args, argv)
        if args.dry_run:
            _print_estimate(estimate(config))
            return 0
        check_writable(config.out)  # a gs:// output that cannot be written fails before any call
        manifest = run_pipeline(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print_summary(manifest)
    print(f"manifest: {config.out / 'manifest.json'}")
    reason = unusable_reason(manifest)
    if reason:
        print(f"error: nothing usable was produced: {reason}", file=sys.stderr)
        return 1
    return 0


__all__ = ["build_parser", "dumps", "main"]
