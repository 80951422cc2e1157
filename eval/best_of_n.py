"""``python -m eval best-of-n BENCH``: the paper's Best-of-N protocol on a judged benchmark, as one run.

For each item, N responses are sampled from a policy with the benchmark's own sampling settings (for
Multifaceted Bench the paper's: temperature 1.0, top-p 0.9, repetition penalty 1.03), the reward model keeps
the one with the highest reward (``janus-best-of-n``'s machinery, janus_jax/cli/best_of_n.py), and the
benchmark's judge grades the picks as it grades any answers (eval/runner.py). The run directory is
``eval run``'s plus::

    best_of_n/prompts.jsonl      the items' id, system and prompt, one per line
    best_of_n/selections.jsonl   per item: the N responses, their rewards and the pick (resumable)
    best_of_n/picks.jsonl        per item: the pick and its reward (the answers the judge grades)
    best_of_n.json               policy, reward model, N, sampling, and a summary of the rewards

Every stage resumes: sampled items are not sampled again, graded picks are not graded again. A directory
started with another policy, reward model, N or sampling is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from eval.benches import get_benchmark
from eval.benches.common import Benchmark, Item, RunSettings
from eval.runner import JudgeSpec, ModelSpec, plan, run
from eval.store import write_json
from janus_jax.paths import is_url

SUBDIR = "best_of_n"


@dataclasses.dataclass(frozen=True)
class BestOfN:
    """Where the answers come from: N samples of `policy`, the highest reward under `rm` kept."""

    policy: str
    rm: str
    n: int
    seed: int = 0  # sample k of item line L uses seed (seed + L * n + k)
    batch_size: int = 16  # sequences sampled or scored together
    max_length: int = 0  # tokens per scored sequence (0: the reward model's training seq_len)
    name: str | None = None  # the name in the report (default: "<policy>-best-of-<n>")

    @property
    def model_name(self) -> str:
        return self.name or f"{Path(self.policy).name}-best-of-{self.n}"


def _sampling(bench: Benchmark, items: list[Item], settings: RunSettings, seed: int):
    """The benchmark's generation options as sampling parameters, the same for every item."""
    from janus_jax.sample import SamplingParams

    multi = [it.id for it in items if len(it.turns) != 1]
    if multi:
        raise ValueError(f"{bench.name}: best-of-n picks one reply to one prompt; items {multi[:5]} have several turns")
    options = [bench.generation_options(it, settings) for it in items]
    if any(o != options[0] for o in options):
        raise ValueError(f"{bench.name}: items ask for different sampling settings; best-of-n samples all alike")
    o = options[0]
    if not o.get("temperature"):
        raise ValueError(f"{bench.name} answers greedily (temperature 0): its N samples would be one reply N times")
    if int(o.get("n", 1)) != 1:
        raise ValueError(f"{bench.name} samples {o['n']} replies per item for its own metric; best-of-n needs one")
    params = SamplingParams(
        max_new_tokens=int(o.get("max_tokens") or 1024),
        temperature=float(o["temperature"]),
        top_p=float(o.get("top_p", 1.0)),
        repetition_penalty=float((o.get("extra_body") or {}).get("repetition_penalty", 1.0)),
        seed=seed,
    )
    params.validate()
    return params


def _items(bench: Benchmark, settings: RunSettings, limit: int | None) -> list[Item]:
    items = bench.load(settings, limit).items
    if not items:
        raise ValueError(f"{bench.name}: no usable item to evaluate")
    return items


def _source(path: str) -> str:
    """A local model as its absolute path (a resumed run may start elsewhere), a hub id as given."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _record(spec: BestOfN, sampling) -> dict[str, Any]:
    """What makes two runs the same run (best_of_n.json's `settings`)."""
    record = {"policy": _source(spec.policy), "rm": _source(spec.rm), "n": spec.n, "max_length": spec.max_length,
              "sampling": dataclasses.asdict(sampling)}
    return json.loads(json.dumps(record))  # as stored (tuples become lists), so a resumed run compares equal


def _check_same_run(path: Path, record: dict[str, Any]) -> None:
    if not path.exists():
        return
    stored = json.loads(path.read_text()).get("settings", {})
    changed = sorted(k for k in record if stored.get(k) != record[k])
    if changed:
        shown = "; ".join(f"{k}: {stored.get(k)!r} then, {record[k]!r} now" for k in changed)
        raise ValueError(f"{path.parent} holds a best-of-n run with other settings ({shown}); use another --out")


def _write_prompts(path: Path, items: list[Item]) -> None:
    """One line per item in bench order; a resumed run's lines must name the same items."""
    lines = [json.dumps({"id": it.id, "system": it.system, "prompt": it.prompt}, ensure_ascii=False) for it in items]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _complete_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file up to a torn last line (read only; the row runner cuts it off when it resumes)."""
    if not path.exists():
        return []
    rows = []
    for raw in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not raw.endswith("\n"):
            break
        try:
            rows.append(json.loads(raw))
        except json.JSONDecodeError:
            break
    return rows


def _selected_lines(selections: Path, items: list[Item]) -> set[int]:
    """Lines of the items (1-based, bench order) already selected."""
    return {int(r["input_line"]) for r in _complete_rows(selections)} & set(range(1, len(items) + 1))


def _check_selections_match(selections: Path, items: list[Item]) -> None:
    """Rows selected before name the items now at their lines (rows past a lower --limit are kept, unused)."""
    ids = [it.id for it in items]
    for row in _complete_rows(selections):
        line = int(row.get("input_line", 0))
        if line <= len(ids) and str(row.get("id")) != ids[line - 1]:
            raise ValueError(f"{selections}: line {line} holds item {row.get('id')!r}, but the bench's item there "
                             f"is {ids[line - 1]!r}; use another --out")


def _write_picks(selections: Path, picks: Path, items: list[Item]) -> dict[str, Any]:
    """The picked answer of every selected item, and a summary of the rewards."""
    wanted = {it.id for it in items}
    rows = [r for r in _complete_rows(selections) if str(r["id"]) in wanted]
    picks.write_text("".join(
        json.dumps({"id": r["id"], "response": r["best_response"], "reward": r["rewards"][r["best_index"]],
                    "best_index": r["best_index"]}, ensure_ascii=False) + "\n"
        for r in rows
    ), encoding="utf-8")
    best = [r["rewards"][r["best_index"]] for r in rows]
    every = [x for r in rows for x in r["rewards"]]
    return {
        "items": len(items),
        "items_selected": len(rows),
        "mean_reward_of_picks": float(np.mean(best)) if best else None,
        "mean_reward_of_samples": float(np.mean(every)) if every else None,
    }


def run_best_of_n(
    bench_name: str,
    out: str | Path,
    spec: BestOfN,
    judge_spec: JudgeSpec | None,
    settings: RunSettings,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample, select and grade (see the module docstring); returns the aggregated scores.

    Items the reward model cannot score (a prompt longer than its sequence) are reported on stderr by
    line and appear as `missing_responses` among the run's problems. Raises `eval.runner.NothingUsable`
    when nothing was graded.
    """
    from janus_jax.cli.best_of_n import select_file

    bench = get_benchmark(bench_name)
    if judge_spec is None and bench.needs_judge(settings):
        raise ValueError(f"{bench.name} needs a judge: pass --judge NAME")
    if is_url(out):  # pathlib would turn gs://B/D into a local folder gs:/B/D
        raise ValueError(f"best-of-n samples into local files (janus-best-of-n); {out} is not local: use a local --out")
    out = Path(out)
    items = _items(bench, settings, limit)
    sampling = _sampling(bench, items, settings, spec.seed)
    record = _record(spec, sampling)
    _check_same_run(out / "best_of_n.json", record)
    prompts, selections, picks = (out / SUBDIR / f for f in ("prompts.jsonl", "selections.jsonl", "picks.jsonl"))
    _check_selections_match(selections, items)
    _write_prompts(prompts, items)
    write_json(out / "best_of_n.json", {"settings": record})  # claims the directory before the first sample
    if len(_selected_lines(selections, items)) < len(items):  # else no model needs loading
        select_file(spec.rm, prompts, selections, policy=spec.policy, n=spec.n, sampling=sampling,
                    batch_size=spec.batch_size, max_length=spec.max_length)
    write_json(out / "best_of_n.json", {"settings": record, "summary": _write_picks(selections, picks, items)})
    model = ModelSpec(spec.model_name, responses_file=str(picks))
    return run(bench_name, out, model, judge_spec, settings, limit=limit, progress=progress)


def plan_best_of_n(
    bench_name: str,
    out: str | Path,
    spec: BestOfN,
    judge_spec: JudgeSpec | None,
    settings: RunSettings,
    limit: int | None = None,
) -> dict[str, Any]:
    """The samples, reward-model scores and judge calls a run would make; loads no model, writes nothing."""
    bench = get_benchmark(bench_name)
    out = Path(out)
    items = _items(bench, settings, limit)
    sampling = _sampling(bench, items, settings, spec.seed)
    _check_same_run(out / "best_of_n.json", _record(spec, sampling))
    _check_selections_match(out / SUBDIR / "selections.jsonl", items)
    selected = len(_selected_lines(out / SUBDIR / "selections.jsonl", items))
    model = ModelSpec(spec.model_name, responses_file=str(out / SUBDIR / "picks.jsonl"))
    result = plan(bench_name, out, model, judge_spec, settings, limit=limit)
    todo = len(items) - selected
    result["sampling"] = {
        "policy": str(spec.policy), "rm": str(spec.rm), "n": spec.n, "items_to_sample": todo,
        "selected_before": selected, "samples": todo * spec.n, "params": dataclasses.asdict(sampling),
    }
    return result
