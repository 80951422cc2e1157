"""`make repro`: train the same tiny model under each system-message condition, then serve, generate, judge, report.

For each condition (configs/repro.py presets: generic, sm1, sm3):
  1. `janus-train --config=configs/repro.py:COND` on the world's training rows (same seed, steps and tokens);
  2. `python -m eval run multifaceted --checkpoint ...` on the world's bench: janus-serve serves the checkpoint,
     replies are sampled with the paper's settings, and the rule-based judge (eval/rule_judge.py) grades them
     over the OpenAI protocol;
  3. the replies, value ids, seen/unseen flags, judge scores and independent checks go to
     `OUT/COND/generations.jsonl`.
Then `OUT/report.md` and `OUT/report.png` compare the conditions (see report.py). Every step resumes: the world
is reused when its config is unchanged, janus-train resumes its checkpoints, eval reuses its stored replies
and judgments, so a killed `make repro` continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_gen.world.checker import satisfies
from data_gen.world.generate import WorldConfig, write_world
from data_gen.world.records import Record
from janus_jax.jsonio import read_jsonl, write_jsonl_atomic

log = logging.getLogger(__name__)
CONDITIONS = ("generic", "sm1", "sm3")
CONFIG_FILE = Path(__file__).resolve().parents[2] / "configs" / "repro.py"


@dataclass
class ReproSettings:
    """Where and what to run; `train_overrides` are extra `--config.KEY=VALUE` flags for every condition."""

    out: Path = Path("runs/repro")
    world: WorldConfig = field(default_factory=WorldConfig)
    conditions: tuple[str, ...] = CONDITIONS
    train_overrides: tuple[str, ...] = ()
    bootstrap_rounds: int = 1000


def workdir(out: Path, condition: str) -> Path:
    """The training run of a condition; its directory name is the model name the eval run reports."""
    return out / condition / f"janus-{condition}"


def _program(name: str, module: str) -> list[str]:
    """A console script of this installation (next to the interpreter), else its module run with -m."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def _run(command: list[str], log_path: Path) -> None:
    """Run a stage, its output appended to `log_path`; a failure names the stage and its log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    with log_path.open("a") as f:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        # Its own process group: if this run is interrupted, the stage goes down with every process it started
        # (the eval run's janus-serve too), instead of leaving them orphaned.
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{command[0]} exited with code {code}; see {log_path}:\n{tail}")


def train_condition(settings: ReproSettings, world_dir: Path, condition: str) -> Path:
    """janus-train for one condition (a finished run returns at once); returns its workdir."""
    wd = workdir(settings.out, condition)
    command = [*_program("janus-train", "janus_jax.train.cli"), f"--config={CONFIG_FILE}:{condition}",
               f"--workdir={wd}", f"--config.data.source={world_dir / 'sft.jsonl'}",
               f"--config.data.eval_source={world_dir / 'sft_heldout.jsonl'}", *settings.train_overrides]
    _run(command, settings.out / condition / "train.log")
    return wd


def evaluate_condition(settings: ReproSettings, world_dir: Path, condition: str, judge_url: str,
                       responses: Path | None = None) -> Path:
    """`python -m eval run multifaceted` on the bench with the rule judge; returns the eval directory.

    The condition's checkpoint is served by janus-serve, unless `responses` gives replies generated elsewhere
    (a JSONL of bench row `id` + `response`).
    """
    eval_dir = settings.out / condition / "eval"
    model = ["--model", f"janus-{condition}", "--responses", str(responses)] if responses else \
        ["--checkpoint", str(workdir(settings.out, condition))]
    command = [sys.executable, "-m", "eval", "run", "multifaceted", *model,
               "--bench-file", str(world_dir / "bench.jsonl"), "--judge", "rule-judge", "--judge-base-url", judge_url,
               "--judge-api-key-env", "RULE_JUDGE_KEY", "--out", str(eval_dir), "--runs", "1", "--max-reasks", "0",
               "--rounds", str(settings.bootstrap_rounds), "--concurrency", "32", "--quiet"]
    _run(command, settings.out / condition / "eval.log")
    return eval_dir


def generations(world_dir: Path, eval_dir: Path, condition: str) -> list[dict[str, Any]]:
    """One row per bench item: system, prompt, reply, value ids, seen flag, judge scores and checks.

    `reply` is None (and `failure` says why) when the model gave no answer; a judge score is None when the
    judge failed on that rubric. Bench ids are row indices of bench.jsonl (Multifaceted Bench has no id column).
    """
    bench = read_jsonl(world_dir / "bench.jsonl")
    answers = {r["id"]: r for r in read_jsonl(eval_dir / "responses.jsonl")}
    scores: dict[tuple[str, int], list[float | None]] = {}
    for j in read_jsonl(eval_dir / "judgments.jsonl"):
        scores.setdefault((j["id"], int(j["rubric"])), []).append(j.get("value"))
    rows = []
    for i, item in enumerate(bench):
        rid = str(i)
        answer = answers.get(rid) or {}
        reply = (answer.get("answers") or [None])[0] if not answer.get("error") else None
        record = Record(**item["record"])
        judge_scores, checks = {}, {}
        for r, value_id in enumerate(item["value_ids"]):
            got = [v for v in scores.get((rid, r), []) if v is not None]
            judge_scores[value_id] = sum(got) / len(got) if got else None
            checks[value_id] = satisfies(value_id, reply, record) if reply is not None else None
        rows.append({
            "id": rid, "condition": condition, "system": item["system"], "prompt": item["prompt"], "reply": reply,
            "value_ids": item["value_ids"], "seen_system_message": item["seen_system_message"],
            "judge_scores": judge_scores, "checks": checks,
            "failure": None if reply is not None else (answer.get("error") or "no answer"),
        })
    return rows


@contextlib.contextmanager
def timed(path: Path, stage: str) -> Iterator[None]:
    """Add the stage's wall seconds and its subprocesses' CPU seconds to `path` (summed over reruns).

    CPU seconds do not depend on what else runs on the machine: divided by the cores, they say how long the
    stage takes on an idle machine.
    """
    t0, c0 = time.monotonic(), _children_cpu_s()
    yield
    totals = json.loads(path.read_text()) if path.exists() else {}
    entry = totals.setdefault(stage, {"wall_s": 0.0, "cpu_s": 0.0})
    entry["wall_s"] = round(entry["wall_s"] + time.monotonic() - t0, 1)
    entry["cpu_s"] = round(entry["cpu_s"] + _children_cpu_s() - c0, 1)
    path.write_text(json.dumps(totals, indent=2) + "\n")


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_repro(settings: ReproSettings) -> Path:
    """The whole experiment; returns the path of report.md."""
    from data_gen.world.report import write_report
    from eval.rule_judge import serving

    settings.out.mkdir(parents=True, exist_ok=True)
    world_dir = write_world(settings.world, settings.out / "world")
    with serving() as judge:
        for condition in settings.conditions:
            timing = settings.out / condition / "timing.json"
            timing.parent.mkdir(parents=True, exist_ok=True)
            print(f"[repro] {condition}: training", flush=True)
            with timed(timing, "train"):
                train_condition(settings, world_dir, condition)
            print(f"[repro] {condition}: serve, generate, judge", flush=True)
            with timed(timing, "eval"):
                eval_dir = evaluate_condition(settings, world_dir, condition, judge.base_url)
            rows = generations(world_dir, eval_dir, condition)
            write_jsonl_atomic(settings.out / condition / "generations.jsonl", rows)
            print(f"[repro] {condition}: done ({json.loads(timing.read_text())})", flush=True)
        judge_stats = {"answered": judge.answered, "refused": judge.failures}
    report = write_report(settings.out, settings.conditions, judge_stats=judge_stats,
                          rounds=settings.bootstrap_rounds)
    print(f"[repro] report: {report}", flush=True)
    return report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repro", help="train generic/sm1/sm3, serve, generate, judge, report (make repro)")
    p.add_argument("--out", default="runs/repro", help="experiment directory (reused to resume)")
    p.add_argument("--world-config", metavar="FILE", help="JSON world config (default: the built-in one)")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=["generic", "sm1", "sm2", "sm3"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for every condition, e.g. --set train.max_steps=100")
    p.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds")
    p.set_defaults(func=_cmd_repro)


def _cmd_repro(args: argparse.Namespace) -> int:
    from data_gen.world.generate import load_world_config

    settings = ReproSettings(out=Path(args.out), world=load_world_config(args.world_config),
                             conditions=tuple(args.conditions),
                             train_overrides=tuple(f"--config.{kv}" for kv in args.overrides),
                             bootstrap_rounds=args.rounds)
    run_repro(settings)
    return 0
