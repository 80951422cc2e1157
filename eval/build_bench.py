"""``python -m eval build-bench``: make a Multifaceted-Bench-format set offline, with any LLM.

Prompts are drawn (seeded) from the five source benchmarks shipped in ``eval/data``; the data_gen stages
then write, per prompt, three preference sets, a system message per set, a reference answer per system
message and one rubric per preference. Rows have the released bench's columns (``source``,
``preference_set``, ``system``, ``prompt``, ``reference_answer``, ``rubrics``); ``source`` names the
benchmark the prompt came from, which ``eval.source_map`` reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

from eval import DATA_DIR
from eval.source_map import self_instruct_prompts
from janus_jax.jsonio import read_jsonl

SOURCE_NAMES = {"alpaca_eval": "AlpacaEval", "flask": "FLASK", "koala": "Koala", "mt_bench": "MT-Bench",
                "self_instruct": "Self-Instruct"}


def source_prompts() -> dict[str, list[str]]:
    """Every prompt of the five shipped source benchmarks (first turns for MT-Bench)."""
    alpaca = json.loads((DATA_DIR / "alpaca_eval" / "gpt4_1106_preview_outputs.json").read_text())
    self_instruct = []
    for row in read_jsonl(DATA_DIR / "sources" / "user_oriented_instructions.jsonl"):
        self_instruct += self_instruct_prompts(row)
    return {
        "alpaca_eval": [r["instruction"] for r in alpaca],
        "flask": [r["instruction"] for r in read_jsonl(DATA_DIR / "sources" / "flask_evaluation.jsonl")],
        "koala": [r["prompt"] for r in read_jsonl(DATA_DIR / "sources" / "koala_test_set.jsonl")],
        "mt_bench": [r["turns"][0] for r in read_jsonl(DATA_DIR / "mt_bench" / "question.jsonl")],
        "self_instruct": self_instruct,
    }


def draw_prompts(per_source: int, seed: int, sources: list[str] | None = None,
                 extra: dict[str, list[str]] | None = None) -> list[dict[str, str]]:
    """``per_source`` distinct prompts from each source (seeded); ``extra`` adds user-supplied sources."""
    pools = source_prompts()
    pools.update(extra or {})
    rng = random.Random(seed)
    rows = []
    for name in sources or list(pools):
        if name not in pools:
            raise ValueError(f"unknown source {name!r}; known: {', '.join(pools)}")
        unique = list(dict.fromkeys(p for p in pools[name] if p.strip()))
        for k, prompt in enumerate(rng.sample(unique, min(per_source, len(unique)))):
            rows.append({"id": f"{name}-{k}", "prompt": prompt, "source": SOURCE_NAMES.get(name, name)})
    return rows


async def build(instructions: list[dict[str, str]], client: Any, work_dir: Path, seed: int,
                progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the data_gen stages; returns (bench rows, failures). Each stage resumes from ``work_dir``."""
    from data_gen import preference_sets, responses, rubrics, system_messages
    from data_gen.stage_runner import run_llm_stage

    prompts = {row["id"]: row["prompt"] for row in instructions}
    failures: list[dict[str, Any]] = []
    pref = await run_llm_stage("preference_sets", preference_sets.TEMPLATE.tag,
                               preference_sets.build_tasks(instructions, seed), client, work_dir, progress=progress)
    systems = await run_llm_stage("system_messages", system_messages.TEMPLATE.tag,
                                  system_messages.build_tasks(pref.rows), client, work_dir, progress=progress)
    gold = await run_llm_stage("reference_answers", responses.TEMPLATE.tag,
                               responses.build_tasks(systems.rows, prompts), client, work_dir, progress=progress)
    available = {(r["instruction_id"], r["set_index"]) for r in gold.rows}
    rubric_rows = await run_llm_stage("rubrics", rubrics.TEMPLATE.tag, rubrics.build_tasks(pref.rows, available),
                                      client, work_dir, progress=progress)
    for report in (pref, systems, gold, rubric_rows):
        failures += report.failures
    system_of = {(r["instruction_id"], r["set_index"]): r["system"] for r in systems.rows}
    gold_of = {(r["instruction_id"], r["set_index"]): r["output"] for r in gold.rows}
    rubric_of = {(r["instruction_id"], r["set_index"], r["dimension"]): r["rubric"] for r in rubric_rows.rows}
    source_of = {row["id"]: row["source"] for row in instructions}
    bench = []
    for row in pref.rows:
        iid = row["instruction_id"]
        for k, preference_set in enumerate(row["preference_sets"]):
            rubric_list = [rubric_of.get((iid, k, p["dimension"])) for p in preference_set]
            if (iid, k) not in gold_of or any(r is None for r in rubric_list):
                failures.append({"stage": "assemble", "id": f"{iid}/{k}",
                                 "reason": "a system message, reference answer or rubric is missing"})
                continue
            bench.append({"source": source_of[iid], "preference_set": preference_set, "system": system_of[(iid, k)],
                          "prompt": prompts[iid], "reference_answer": gold_of[(iid, k)], "rubrics": rubric_list})
    return bench, failures


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-bench", help="build a Multifaceted-Bench-format set with any LLM (offline sources)")
    p.add_argument("--model", required=True, help="the LLM that writes preferences, system messages, answers, rubrics")
    p.add_argument("--base-url")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--out", required=True, metavar="FILE", help="bench JSONL to write (stage files go beside it)")
    p.add_argument("--per-source", type=int, default=60, help="prompts drawn from each source benchmark")
    p.add_argument("--sources", nargs="+", choices=list(SOURCE_NAMES), help="default: all five")
    p.add_argument("--extra-source", nargs=2, action="append", metavar=("NAME", "JSONL"), default=[],
                   help="another prompt source: rows with a 'prompt' field")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from janus_jax.llm import LLMClient

    extra = {name: [r["prompt"] for r in read_jsonl(path)] for name, path in args.extra_source}
    sources = (args.sources or list(SOURCE_NAMES)) + list(extra)
    instructions = draw_prompts(args.per_source, args.seed, sources, extra)
    out = Path(args.out)
    work_dir = out.parent / f"{out.stem}.stages"
    work_dir.mkdir(parents=True, exist_ok=True)
    client = LLMClient(args.model, args.base_url, api_key_env=args.api_key_env, max_concurrency=args.concurrency,
                       cache_path=work_dir / "llm_cache.jsonl")

    async def go():
        try:
            return await build(instructions, client, work_dir, args.seed, progress=not args.quiet)
        finally:
            await client.aclose()

    try:
        bench, failures = asyncio.run(go())
    finally:
        client.close()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bench), encoding="utf-8")
    (work_dir / "failures.jsonl").write_text("".join(json.dumps(f) + "\n" for f in failures), encoding="utf-8")
    print(f"{len(bench)} bench rows from {len(instructions)} prompts -> {out}; {len(failures)} failures "
          f"(listed in {work_dir / 'failures.jsonl'})")
    return 0 if bench else 1
