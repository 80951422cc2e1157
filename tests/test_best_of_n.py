"""Best-of-N with a trained reward model: scores match RM training exactly, picks are the argmax,
the CLI reports bad rows by line, resumes, and samples from a policy when asked; the RM's second stage
starts from the first, scalar head included."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_train_preference import SAMPLES, VOCAB, tiny, write_sample_tokenizer

from configs import rm
from janus_jax.best_of_n import RewardScorer, load_reward_model, run_settings, select_best
from janus_jax.cli.best_of_n import main
from janus_jax.tokenizer import load_tokenizer
from janus_jax.train.hooks import evaluate
from janus_jax.train.metrics import read_metrics
from janus_jax.train.run import build_run
from janus_jax.train.trainer import train

N_PAIRS = 16  # RM-schema sample pairs used here (train and eval are the same pairs)
HELPFUL = SAMPLES.parent.parent / rm.get_config("tiny_helpful").data.source  # the stage-2 sample pairs


def _split_input(rm_input: str) -> tuple[str, str]:
    """RM rows carry `system + "\\n" + prompt`; the samples' system messages are one line."""
    system, prompt = rm_input.split("\n", 1)
    return system, prompt


@pytest.fixture(scope="module")
def pairs():
    rows = [json.loads(line) for line in (SAMPLES / "rm.jsonl").read_text().splitlines()[:N_PAIRS]]
    return [(*_split_input(r["input"]), r["chosen"], r["rejected"]) for r in rows]


def _first_lines(source: Path, path: Path, n: int = N_PAIRS) -> Path:
    path.write_text("".join(source.read_text().splitlines(keepends=True)[:n]))
    return path


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return write_sample_tokenizer(tmp_path_factory.mktemp("tok") / "samples.model")


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tokenizer_path):
    """A tiny reward model trained from scratch on the sample pairs and evaluated on the same pairs."""
    root = tmp_path_factory.mktemp("bon")
    data = _first_lines(SAMPLES / "rm.jsonl", root / "pairs.jsonl")
    cfg = tiny(rm, tokenizer_path, **{"model.init_from": "", "data.source": str(data), "data.eval_source": str(data),
                                      "train.max_steps": 16, "train.num_epochs": 8, "optimizer.lr": 5e-3})
    train(cfg, root / "rm")
    return root / "rm"


@pytest.fixture(scope="module")
def scorer(rm_dir):
    settings = run_settings(rm_dir)
    assert settings["max_length"] == 128 and settings["tokenizer"].endswith("samples.model")
    return RewardScorer(load_reward_model(rm_dir), load_tokenizer(settings["tokenizer"]),
                        max_length=settings["max_length"], batch_size=16)


def test_selection_agrees_exactly_with_the_trainers_pairwise_accuracy(rm_dir, scorer, pairs):
    """Best-of-2 over (rejected, chosen) picks chosen iff its reward is strictly higher: the
    trainer's `rewards/accuracies` on the same pairs, so both must render and read the same way."""
    picks = select_best(scorer, [(s, p, [rejected, chosen]) for s, p, chosen, rejected in pairs])
    trainer_accuracy = [r for r in read_metrics(rm_dir) if "eval/rewards/accuracies" in r][-1]
    assert np.mean([pick.best_index == 1 for pick in picks]) == pytest.approx(
        trainer_accuracy["eval/rewards/accuracies"], abs=1e-6
    )
    margins = [pick.rewards[1] - pick.rewards[0] for pick in picks]
    assert np.mean(margins) == pytest.approx(trainer_accuracy["eval/rewards/margins"], abs=1e-4)
    assert trainer_accuracy["eval/rewards/accuracies"] > 0.75  # it learned something to select with


def test_picks_are_the_argmax_and_batching_does_not_change_scores(scorer, pairs):
    system, prompt, chosen, rejected = pairs[0]
    responses = [rejected, chosen, "ok", chosen + " Indeed."]
    one = select_best(scorer, [(system, prompt, responses)])[0]
    assert one.best_index == int(np.argmax(one.rewards)) and one.best_response == responses[one.best_index]
    alone = [scorer.score([(system, prompt, r)])[0] for r in responses]
    np.testing.assert_allclose(one.rewards, alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="request 1: no responses"):
        select_best(scorer, [(system, prompt, responses), (system, prompt, [])])
    with pytest.raises(ValueError, match=r"items \[0\]: the prompt leaves no room"):
        scorer.score([(system, "word " * 200, "yes")])


def test_tiny_two_stage_recipe_mirrors_the_7b_one():
    stage1, stage2 = rm.get_config("tiny"), rm.get_config("tiny_helpful")
    assert stage2.model.init_from == "runs/rm-tiny" and HELPFUL.is_file()
    changed = {(k, f) for k in ("model", "data", "optimizer", "train") for f in stage1[k]
               if stage1[k][f] != stage2[k][f]}
    assert changed == {("model", "init_from"), ("data", "source")}


@pytest.fixture(scope="module")
def stage_two(tmp_path_factory, tokenizer_path, rm_dir, scorer):
    """The RM's second stage from `rm_dir` on helpfulness pairs: its workdir, its rewards before the first
    step next to stage 1's on the same sequences, and its eval metrics before and after training."""
    from flax import nnx

    root = tmp_path_factory.mktemp("stage2")
    data = _first_lines(HELPFUL, root / "helpful.jsonl")
    cfg = tiny(rm, tokenizer_path, **{"model.init_from": str(rm_dir), "data.source": str(data),
                                      "data.eval_source": str(data), "train.max_steps": 8, "train.num_epochs": 4,
                                      "optimizer.lr": 5e-3})
    run = build_run(cfg)
    initial = run.initial_params()
    at_start = RewardScorer(nnx.merge(run.graphdef, initial), scorer.tokenizer, max_length=scorer.max_length,
                            mesh=run.mesh)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    triples = [("", r["input"], r[side]) for r in rows for side in ("chosen", "rejected")]
    rewards = {"stage 2 at step 0": at_start.score(triples), "stage 1": scorer.score(triples)}
    before = evaluate(run, initial)
    train(cfg, root / "rm")
    after = [r for r in read_metrics(root / "rm") if "eval/loss" in r][-1]
    return {"dir": root / "rm", "rewards": rewards, "before": before, "after": after}


def test_stage_two_starts_from_the_stage_one_reward_model_head_included(stage_two):
    """init_from a reward model restores its scalar head too: before any step, stage 2 gives stage 1's
    rewards on the helpfulness pairs (a fresh head would give others); then stage 2 learns them."""
    rewards = stage_two["rewards"]
    np.testing.assert_allclose(rewards["stage 2 at step 0"], rewards["stage 1"], rtol=1e-5, atol=1e-5)
    before, after = stage_two["before"], stage_two["after"]
    assert after["eval/loss"] < before["eval/loss"], (before, after)
    assert after["eval/rewards/accuracies"] > before["eval/rewards/accuracies"], (before, after)


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _candidates(pairs) -> list[str]:
    return [json.dumps({"system": s, "prompt": p, "responses": [r, c], "id": i}) for i, (s, p, c, r) in
            enumerate(pairs)]


def test_cli_reports_bad_rows_by_line_and_counts_them(tmp_path, rm_dir, pairs, capsys):
    good = _candidates(pairs[:2])
    lines = [good[0], "{not json", json.dumps({"system": "x", "prompt": "y", "responses": []}), good[1]]
    inp, out = _write_jsonl(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"
    assert main([f"--rm={rm_dir}", f"--input={inp}", f"--output={out}"]) == 1
    err = capsys.readouterr().err
    assert f"{inp}:2: not valid JSON" in err and f"{inp}:3: field 'responses' must be a non-empty list" in err
    assert "2 input row(s) not scored" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_line"] for r in rows] == [1, 4] and [r["id"] for r in rows] == [0, 1]
    for r in rows:
        assert r["best_response"] == r["responses"][r["best_index"]] and len(r["rewards"]) == 2


def test_cli_resumes_after_an_interrupted_run(tmp_path, rm_dir, pairs):
    inp = _write_jsonl(tmp_path / "in.jsonl", _candidates(pairs[:5]))
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    assert main([f"--rm={rm_dir}", f"--input={inp}", f"--output={whole}", "--batch-size=16"]) == 0
    done = whole.read_text().splitlines(keepends=True)
    resumed.write_text(done[0] + done[1] + done[2][: len(done[2]) // 2])  # killed while writing line 3
    assert main([f"--rm={rm_dir}", f"--input={inp}", f"--output={resumed}", "--batch-size=16"]) == 0
    assert [json.loads(x) for x in resumed.read_text().splitlines()] == [json.loads(x) for x in done]


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    """A tiny random policy on the samples' vocabulary, as an HF directory."""
    from flax import nnx

    from janus_jax.hf_io import save_pretrained
    from janus_jax.model import Mistral, MistralConfig

    return save_pretrained(Mistral(MistralConfig.tiny(vocab_size=VOCAB), rngs=nnx.Rngs(3)),
                           tmp_path_factory.mktemp("policy") / "policy", dtype="float32")


@pytest.mark.slow  # 20-60 s on 2 cores (make test-all); eval best-of-n below samples N from the policy in make test
def test_cli_samples_n_responses_from_a_policy(tmp_path, rm_dir, pairs, policy):
    inp = _write_jsonl(tmp_path / "prompts.jsonl", [json.dumps({"system": s, "prompt": p}) for s, p, _, _ in pairs[:2]])
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        code = main([f"--rm={rm_dir}", f"--policy={policy}", "--n=3", "--max-new-tokens=8", f"--input={inp}",
                     f"--output={out}", "--batch-size=8"])
        assert code == 0
        outputs.append([json.loads(line) for line in out.read_text().splitlines()])
    a, b = outputs
    assert a == b  # seeded per input line and sample
    for row in a:
        assert len(row["responses"]) == len(row["rewards"]) == 3
        assert row["best_index"] == int(np.argmax(row["rewards"]))
    assert len({r for row in a for r in row["responses"]}) > 1  # distinct samples, not one reply copied


def _bench_rows(pairs) -> list[dict]:
    """Multifaceted Bench rows on the samples' system messages and questions, two rubrics each, plus one
    row without rubrics (reported, not evaluated)."""
    rubric = [{"criteria": f"criterion-{r}", "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}}
              for r in range(2)]
    rows = [{"source": "Koala", "system": s, "prompt": p, "reference_answer": c, "rubrics": rubric,
             "preference_set": [{"dimension": d} for d in ("style", "informativeness")]} for s, p, c, _ in pairs]
    return rows + [{"source": "Koala", "system": "x", "prompt": "no rubrics here", "reference_answer": "r"}]


def _judge_score(response: str) -> int:
    return 1 + int(hashlib.sha256(response.encode()).hexdigest(), 16) % 5


def test_eval_best_of_n_samples_picks_with_the_rm_and_grades_the_picks(tmp_path, pairs, policy, stage_two, capsys):
    """`python -m eval best-of-n multifaceted`: N samples per item from the policy, the two-stage RM's pick,
    graded by a judge over real HTTP; the report scores exactly the picks; a killed run resumes to the same
    result; a dry run states the calls and touches nothing; other settings in the same directory are refused."""
    from scripted_openai_server import ScriptedOpenAIServer

    from eval.cli import main as eval_main

    bench = _write_jsonl(tmp_path / "bench.jsonl", [json.dumps(r) for r in _bench_rows(pairs[:3])])
    out = tmp_path / "run"

    def rules(call) -> str:
        response = re.search(r"###Response to evaluate:\n(.*?)\n\n###Reference", call.user, re.DOTALL).group(1)
        return f"Feedback: graded. [RESULT] {_judge_score(response)}"

    with ScriptedOpenAIServer(rules) as server:
        args = ["best-of-n", "multifaceted", f"--policy={policy}", f"--rm={stage_two['dir']}", "--n=4",
                "--max-new-tokens=6", "--batch-size=16", "--judge=judge", f"--judge-base-url={server.base_url}",
                f"--bench-file={bench}", f"--out={out}", "--runs=1", "--rounds=50", "--quiet"]
        assert eval_main([*args, "--dry-run"]) == 0
        plan = capsys.readouterr().out
        assert "12 samples = 3 items x 4" in plan and "<=6 new tokens each; temperature 1.0, top-p 0.9, " \
            "repetition penalty 1.03" in plan and "judge (judge): 6 calls" in plan
        assert not out.exists() and server.call_count == 0

        assert eval_main(args) == 0
        selections = [json.loads(x) for x in (out / "best_of_n" / "selections.jsonl").read_text().splitlines()]
        judged = {re.search(r"###Response to evaluate:\n(.*?)\n\n###Reference", c.user, re.DOTALL).group(1)
                  for c in server.calls_where(lambda c: c.model == "judge")}

        assert [r["id"] for r in selections] == ["0", "1", "2"]
        for row in selections:
            assert len(row["responses"]) == len(row["rewards"]) == 4
            assert row["best_index"] == int(np.argmax(row["rewards"]))
            assert row["best_response"] == row["responses"][row["best_index"]]
        assert judged == {row["best_response"] for row in selections}  # the judge saw the picks and only them
        scores = json.loads((out / "scores.json").read_text())
        assert scores["model"] == "policy-best-of-4"
        assert scores["overall"]["value"] == pytest.approx(np.mean([_judge_score(r["best_response"])
                                                                    for r in selections]))
        assert scores["problems"]["bad_bench_rows"] == ["3: no rubrics (neither 'rubrics' nor 'rubric')"]
        record = json.loads((out / "best_of_n.json").read_text())
        assert record["settings"]["n"] == 4 and record["settings"]["sampling"]["max_new_tokens"] == 6
        assert record["summary"]["mean_reward_of_picks"] == pytest.approx(np.mean([max(r["rewards"])
                                                                                   for r in selections]))
        assert (out / "report.md").is_file()

        # Killed while sampling the second item, after the first was judged: the rerun samples the rest
        # with the same seeds and grades what was missing.
        done = (out / "best_of_n" / "selections.jsonl").read_text().splitlines(keepends=True)
        (out / "best_of_n" / "selections.jsonl").write_text(done[0] + done[1][: len(done[1]) // 2])
        (out / "judgments.jsonl").write_text((out / "judgments.jsonl").read_text().splitlines(keepends=True)[0])
        (out / "scores.json").unlink()
        assert eval_main(args) == 0
        assert [json.loads(x) for x in (out / "best_of_n" / "selections.jsonl").read_text().splitlines()] == selections
        assert json.loads((out / "scores.json").read_text())["overall"] == scores["overall"]

        assert eval_main([*args[:4], "--n=3", *args[5:]]) == 2
        assert "other settings (n: 4 then, 3 now)" in capsys.readouterr().err


@pytest.mark.parametrize("bench,why", [("mt_bench", r"items \['81', .*\] have several turns"),
                                       ("arena_hard", r"arena_hard answers greedily \(temperature 0\)")])
def test_eval_best_of_n_refuses_benches_it_cannot_sample(tmp_path, capsys, bench, why):
    """Best-of-N picks one sampled reply per prompt: two-turn and greedy benchmarks are refused, before any model
    is loaded."""
    from eval.cli import main as eval_main

    args = ["best-of-n", bench, "--policy=p/q", "--rm=r/s", "--judge=j", f"--out={tmp_path / 'run'}", "--dry-run"]
    assert eval_main(args) == 2
    assert re.search(why, capsys.readouterr().err)


def test_eval_best_of_n_refuses_a_directory_of_other_items(tmp_path, pairs, capsys):
    from eval.cli import main as eval_main

    bench = _write_jsonl(tmp_path / "bench.jsonl", [json.dumps(r) for r in _bench_rows(pairs[:2])])
    out = tmp_path / "run"
    (out / "best_of_n").mkdir(parents=True)
    (out / "best_of_n" / "selections.jsonl").write_text(json.dumps({"id": "7", "input_line": 1}) + "\n")
    args = ["best-of-n", "multifaceted", "--policy=p/q", "--rm=r/s", "--judge=j", f"--bench-file={bench}",
            f"--out={out}", "--dry-run"]
    assert eval_main(args) == 2
    assert "line 1 holds item '7', but the bench's item there is '0'" in capsys.readouterr().err
