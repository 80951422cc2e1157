"""Best-of-N with a trained reward model: scores match RM training exactly, picks are the argmax,
the CLI reports bad rows by line, resumes, and samples from a policy when asked; the RM's second stage
starts from the first, scalar head included."""

import json
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


def test_stage_two_starts_from_the_stage_one_reward_model_head_included(tmp_path, tokenizer_path, rm_dir, scorer):
    """init_from a reward model restores its scalar head too: before any step, stage 2 gives stage 1's
    rewards on the helpfulness pairs (a fresh head would give others); then stage 2 learns them."""
    from flax import nnx

    data = _first_lines(HELPFUL, tmp_path / "helpful.jsonl")
    cfg = tiny(rm, tokenizer_path, **{"model.init_from": str(rm_dir), "data.source": str(data),
                                      "data.eval_source": str(data), "train.max_steps": 8, "train.num_epochs": 4,
                                      "optimizer.lr": 5e-3})
    run = build_run(cfg)
    initial = run.initial_params()
    at_start = RewardScorer(nnx.merge(run.graphdef, initial), scorer.tokenizer, max_length=scorer.max_length,
                            mesh=run.mesh)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    triples = [("", r["input"], r[side]) for r in rows for side in ("chosen", "rejected")]
    np.testing.assert_allclose(at_start.score(triples), scorer.score(triples), rtol=1e-5, atol=1e-5)
    before = evaluate(run, initial)
    train(cfg, tmp_path / "stage2")
    after = [r for r in read_metrics(tmp_path / "stage2") if "eval/loss" in r][-1]
    assert after["eval/loss"] < before["eval/loss"] and after["eval/rewards/accuracies"] >= 0.9, (before, after)


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
    assert main([f"--rm={rm_dir}", f"--input={inp}", f"--output={whole}", "--batch-size=2"]) == 0
    done = whole.read_text().splitlines(keepends=True)
    resumed.write_text(done[0] + done[1] + done[2][: len(done[2]) // 2])  # killed while writing line 3
    assert main([f"--rm={rm_dir}", f"--input={inp}", f"--output={resumed}", "--batch-size=2"]) == 0
    assert [json.loads(x) for x in resumed.read_text().splitlines()] == [json.loads(x) for x in done]


def test_cli_samples_n_responses_from_a_policy(tmp_path, rm_dir, pairs):
    from flax import nnx

    from janus_jax.hf_io import save_pretrained
    from janus_jax.model import Mistral, MistralConfig

    policy = save_pretrained(Mistral(MistralConfig.tiny(vocab_size=VOCAB), rngs=nnx.Rngs(3)), tmp_path / "policy",
                             dtype="float32")
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
