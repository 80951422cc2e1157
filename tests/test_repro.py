"""`make repro`: the sweep's conditions share one held-out set; the report's statistics; the runner's chain."""

import json
from pathlib import Path

import pytest

from data_gen.world import WorldConfig, write_world
from data_gen.world.report import summarize, write_report
from data_gen.world.repro import ReproSettings, run_repro
from janus_jax.data import build_data
from janus_jax.jsonio import write_jsonl_atomic
from janus_jax.tokenizer import load_tokenizer
from launch import sweep
from launch.job import resolve_config

REPO = Path(__file__).resolve().parents[1]


def test_sweep_conditions_and_the_generic_baseline_share_one_held_out_set(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    world = write_world(WorldConfig(train_instructions=12, heldout_instructions=3), tmp_path / "world")
    loaded = sweep.load_sweep(REPO / "configs" / "sweeps" / "sft_system_messages.py")
    specs = [[f"--config={loaded.base}", *(f"--config.{k}={v}" for k, v in p.overrides.items())]
             for p in loaded.points]
    specs.append(["--config=configs/repro.py:generic"])
    tok = load_tokenizer()
    held, trained = [], []
    for spec in specs:
        cfg = resolve_config(spec)
        cfg.data.source, cfg.data.eval_source = str(world / "sft.jsonl"), str(world / "sft_heldout.jsonl")
        bundle = build_data(cfg.data, global_batch_size=8, num_epochs=1, process_index=0, process_count=1,
                            tokenizer=tok, expect="sft")
        held.append(bundle.eval.store.rows.tolist() + bundle.eval.store.lengths.tolist())
        trained.append(bundle.report.examples["train"])
    assert len(held) == 4 and all(h == held[0] for h in held)
    assert trained == [12, 24, 36, 12]  # k = 1, 2, 3 system messages, then generic (1 row per instruction)
    generic = resolve_config(["--config=configs/repro.py:generic"])
    sm3 = resolve_config(["--config=configs/repro.py:sm3"])
    assert generic.train.max_steps == sm3.train.max_steps and generic.train.seed == sm3.train.seed
    assert generic.data.system_message_policy == "generic" and sm3.data.system_message_policy == "as_is"


def _row(i, seen, scores, checks, reply="r"):
    return {"id": str(i), "seen_system_message": seen, "reply": reply, "value_ids": list(scores),
            "judge_scores": scores, "checks": checks}


def test_summary_scores_gaps_agreement_and_failures():
    ids = ("format=json", "length=short", "audience=novice", "safety=plain")
    good = dict.fromkeys(ids, 5.0)
    bad = dict.fromkeys(ids, 1.0)
    rows = {
        "generic": [_row(i, i % 2 == 1, bad, dict.fromkeys(ids, False)) for i in range(20)],
        "sm3": [_row(i, i % 2 == 1, good, dict.fromkeys(ids, True)) for i in range(19)]
        + [_row(19, True, dict.fromkeys(ids), dict.fromkeys(ids), reply=None)],
    }
    rows["sm3"][0]["judge_scores"] = {**good, "length=short": None}  # one unscored rubric
    s = summarize(rows, rounds=200)
    assert s["overall"]["unseen"]["generic"]["value"] == 1.0
    assert s["overall"]["unseen"]["sm3"]["value"] == 5.0 and s["overall"]["unseen"]["sm3"]["n"] == 9
    gap = s["gaps"]["unseen"]["sm3 - generic"]
    assert gap["value"] == 4.0 and gap["low"] > 0
    assert s["failures"]["sm3"] == {"no_reply": 1, "judge_unscored": 1}
    assert s["agreement"]["generic"]["rate"] == 1.0
    assert s["by_dimension"]["seen"]["style"]["sm3"]["value"] == 5.0


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two trainings and two served evals; an untrained model writes 1024 tokens a reply
def test_repro_chain_trains_serves_judges_reports_and_resumes(tmp_path):
    settings = ReproSettings(
        out=tmp_path / "repro", world=WorldConfig(train_instructions=8, heldout_instructions=2),
        conditions=("generic", "sm3"), bootstrap_rounds=50,
        train_overrides=("--config.train.max_steps=2", "--config.data.seq_len=256", "--config.train.eval_every=0",
                         "--config.train.checkpoint_every=2"),
    )
    report = run_repro(settings)
    text = report.read_text()
    assert "| generic |" in text and "| sm3 |" in text and (report.parent / "report.png").stat().st_size > 0
    for cond in settings.conditions:
        rows = [json.loads(line) for line in (settings.out / cond / "generations.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and {r["seen_system_message"] for r in rows} == {True, False}
        assert all(set(r["judge_scores"]) == set(r["value_ids"]) for r in rows)
        for r in rows:  # judge and independent check agree on every scored rubric
            for v, score in r["judge_scores"].items():
                if score is not None and r["checks"][v] is not None:
                    assert (score == 5) == r["checks"][v]
    responses = (settings.out / "sm3" / "eval" / "responses.jsonl").read_text()
    run_repro(settings)  # a rerun resumes: nothing is trained or generated again
    assert (settings.out / "sm3" / "eval" / "responses.jsonl").read_text() == responses
    assert json.loads((settings.out / "summary.json").read_text())["conditions"] == ["generic", "sm3"]


def test_report_rebuilds_from_generations_alone(tmp_path):
    out = tmp_path / "repro"
    ids = ["format=bullets", "length=detailed", "audience=expert", "safety=caution"]
    for cond, score in (("generic", 2.0), ("sm1", 3.0), ("sm3", 4.0)):
        (out / cond).mkdir(parents=True)
        rows = [{**_row(i, i < 3, dict.fromkeys(ids, score), dict.fromkeys(ids, False)), "condition": cond}
                for i in range(6)]
        (out / cond / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(out, ["generic", "sm1", "sm3"], rounds=50).read_text()
    assert "| sm3 | 4.00 [4.00, 4.00] | 4.00 [4.00, 4.00] |" in text
    assert "| sm1 - generic | unseen | 1.00 [1.00, 1.00] | real (interval above 0) |" in text
    assert (out / "report.png").exists()


@pytest.mark.slow  # 15-20 s on 2 cores (make test-all); tests/test_chain.py runs eval against a judge over HTTP
def test_eval_judge_join_and_report_over_real_http(tmp_path):
    """The chain after training: python -m eval -> rule judge over HTTP -> generations.jsonl -> report."""
    from data_gen.world.repro import evaluate_condition, generations
    from eval.rule_judge import serving
    from janus_jax.jsonio import read_jsonl

    settings = ReproSettings(out=tmp_path / "repro", world=WorldConfig(train_instructions=6, heldout_instructions=4),
                             conditions=("generic", "sm3"), bootstrap_rounds=50)
    world = write_world(settings.world, settings.out / "world")
    bench = read_jsonl(world / "bench.jsonl")
    # One rubric the judge cannot read (no value id): a counted failure, not a crash.
    bench[0]["rubrics"][1]["criteria"] = "Is it good?"
    (world / "bench.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bench))
    replies = {"sm3": [b["reference_answer"] for b in bench],  # the gold replies
               "generic": ["- " + b["reference_answer"].replace("\n", " ") for b in bench]}  # always bullets
    with serving() as judge:
        for cond in settings.conditions:
            answers = tmp_path / f"{cond}.jsonl"
            answers.write_text("".join(json.dumps({"id": str(i), "response": r}) + "\n"
                                       for i, r in enumerate(replies[cond])))
            eval_dir = evaluate_condition(settings, world, cond, judge.base_url, responses=answers)
            write_jsonl_atomic(settings.out / cond / "generations.jsonl", generations(world, eval_dir, cond))
        assert judge.failures == 2  # the unreadable rubric, once per condition
        judgments = (settings.out / "sm3" / "eval" / "judgments.jsonl").read_text()
        evaluate_condition(settings, world, "sm3", judge.base_url, responses=tmp_path / "sm3.jsonl")
        assert judge.failures == 3  # a rerun asks only the failed call again
        assert len((settings.out / "sm3" / "eval" / "judgments.jsonl").read_text()) >= len(judgments)
    rows = read_jsonl(settings.out / "sm3" / "generations.jsonl")
    assert len(rows) == 8 and rows[0]["judge_scores"][bench[0]["value_ids"][1]] is None
    assert all(v == 5 for r in rows[1:] for v in r["judge_scores"].values())
    assert all(r["reply"] == b["reference_answer"] for r, b in zip(rows, bench, strict=True))
    s = json.loads((settings.out / "summary.json").read_text()) if (settings.out / "summary.json").exists() else None
    assert s is None
    text = write_report(settings.out, settings.conditions, rounds=50).read_text()
    s = json.loads((settings.out / "summary.json").read_text())
    assert s["failures"]["sm3"]["judge_unscored"] == 1 and s["agreement"]["sm3"]["rate"] == 1.0
    assert s["agreement"]["generic"]["rate"] == 1.0
    assert s["gaps"]["unseen"]["sm3 - generic"]["low"] > 0
    assert "| sm3 | 5.00" in text
