"""`python -m data_gen.world {generate, check, coverage, repro, report}`: the synthetic world and `make repro`."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from data_gen.world.generate import load_world_config, write_world
from data_gen.world.values import WorldError
from janus_jax.jsonio import read_jsonl


def _cmd_generate(args: argparse.Namespace) -> int:
    out = write_world(load_world_config(args.config), args.out)
    print(json.dumps(json.loads((out / "world.json").read_text())["rows"]))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Satisfaction of each value id over a generations.jsonl, by the independent checker."""
    passed, seen = Counter(), Counter()
    for row in read_jsonl(args.generations):
        for value_id, ok in (row.get("checks") or {}).items():
            if ok is not None:
                seen[value_id] += 1
                passed[value_id] += bool(ok)
    for value_id in sorted(seen):
        print(f"{value_id:18s} {passed[value_id]:4d}/{seen[value_id]:<4d} {passed[value_id] / seen[value_id]:.2f}")
    return 0


def _cmd_coverage(args: argparse.Namespace) -> int:
    """One JSON line per setting of system_messages_per_instruction: the variety its training rows see."""
    from data_gen.world.coverage import coverage
    from data_gen.world.generate import build_world

    cfg = load_world_config(args.config)
    sft = build_world(cfg)["sft.jsonl"]
    for k in range(1, cfg.system_messages_per_instruction + 1):
        print(json.dumps(coverage(sft, k, held_out=cfg.held_out())))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from data_gen.world.report import write_report

    print(write_report(Path(args.out), args.conditions))
    return 0


def main(argv: list[str] | None = None) -> int:
    from data_gen.world.repro import CONDITIONS, add_parser

    parser = argparse.ArgumentParser(prog="python -m data_gen.world", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="write the world (sft, held-out, dpo, bench) to a directory")
    p.add_argument("--out", required=True)
    p.add_argument("--config", metavar="FILE", help="JSON world config (keys of WorldConfig)")
    p.set_defaults(func=_cmd_generate)
    p = sub.add_parser("check", help="per value id, how many replies of a generations.jsonl the checker accepts")
    p.add_argument("generations")
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("coverage", help="how many training combinations and paraphrases 1, 2, 3 system messages "
                       "per instruction see")
    p.add_argument("--config", metavar="FILE", help="JSON world config (keys of WorldConfig)")
    p.set_defaults(func=_cmd_coverage)
    p = sub.add_parser("report", help="rebuild report.md / report.png from the conditions' generations.jsonl")
    p.add_argument("out", nargs="?", default="runs/repro")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.set_defaults(func=_cmd_report)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WorldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
