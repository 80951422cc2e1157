"""Benchmark loaders, source mapping, and Arena-Hard / AlpacaEval runs from answer files against a
scripted judge on 127.0.0.1, with bad input reported by id."""

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, ScriptedOpenAIServer  # noqa: E402

from eval import DATA_DIR  # noqa: E402
from eval.alpaca_lc import length_controlled_winrate  # noqa: E402
from eval.benches import alpaca_eval  # noqa: E402
from eval.benches.alpaca_eval import (
    is_switched,  # noqa: E402
    load_alpaca_eval,  # noqa: E402
)
from eval.benches.arena_hard import load_arena_hard  # noqa: E402
from eval.benches.common import RunSettings  # noqa: E402
from eval.benches.mt_bench import load_mt_bench  # noqa: E402
from eval.benches.multifaceted import load_multifaceted  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402
from eval.prompts import absolute_messages, arena_messages  # noqa: E402
from eval.runner import in_item_order  # noqa: E402
from eval.source_map import map_sources  # noqa: E402
from janus_jax.jsonio import read_jsonl  # noqa: E402


def test_shipped_benchmarks_load():
    assert len(load_alpaca_eval().items) == 805
    mt = load_mt_bench()
    assert len(mt.items) == 80 and not mt.bad_rows
    graded_with_reference = [it for it in mt.items if it.category in ("math", "reasoning", "coding")]
    assert len(graded_with_reference) == 30 and all(len(it.reference) == 2 for it in graded_with_reference)
    arena = load_arena_hard()
    assert len(arena.items) == 500 and arena.items[0].meta["baseline"]


def test_multifaceted_accepts_old_rubric_key_and_reports_bad_rows(tmp_path):
    example = json.loads((DATA_DIR / "janus" / "bench_example.json").read_text())
    assert "rubric" in example and "rubrics" not in example
    rows = [example, {**example, "rubric": []}, {**example, "rubric": [{"criteria": "no descriptions"}]}]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows))
    loaded = load_multifaceted(str(path))
    assert [it.id for it in loaded.items] == ["0"]
    assert [rid for rid, _ in loaded.bad_rows] == ["1", "2"]
    # The judge prompt: the user prompt alone, the rubric as indented JSON, the paper's system prompt.
    messages = absolute_messages(example["prompt"], "RESPONSE", example["reference_answer"], example["rubric"][0])
    assert messages[0]["content"].startswith("You are a fair judge assistant")
    assert example["system"] not in messages[1]["content"]
    assert json.dumps(example["rubric"][0], indent=4) in messages[1]["content"]
    assert messages[1]["content"].endswith("###Feedback:")


def test_source_mapping():
    koala = read_jsonl(DATA_DIR / "sources" / "koala_test_set.jsonl")[5]["prompt"]
    mt = read_jsonl(DATA_DIR / "mt_bench" / "question.jsonl")[3]["turns"][0]
    flask = next(r for r in read_jsonl(DATA_DIR / "sources" / "flask_evaluation.jsonl") if r["task"] == "Bbh")
    alpaca = json.loads((DATA_DIR / "alpaca_eval" / "gpt4_1106_preview_outputs.json").read_text())
    oasst = next(r["instruction"] for r in alpaca if r["dataset"] == "oasst")
    mapping = map_sources(
        [
            ("k", koala.replace("\n", "\\n"), "Koala"),  # escaped newlines, as in some released rows
            ("m", mt.upper(), "anything"),
            ("f", flask["instruction"], "Bbh"),
            ("a", oasst, ""),
            ("x", "A prompt that is in no benchmark at all, long enough to be compared.", "unknown"),
            ("s", "Another unseen prompt, from a source name only, long enough to be compared.", "self-instruct"),
        ]
    )
    assert mapping.subset_of == {
        "k": "mf-Koala",
        "m": "mf-MT-Bench",
        "f": "mf-FLASK",
        "a": "mf-AlpacaEval",
        "x": "unmapped",
        "s": "mf-Self-Instruct",
    }
    assert mapping.unmapped == ["x"]


def test_arena_hard_from_answer_file(tmp_path):
    items = load_arena_hard().items[:6]
    answers = tmp_path / "answers.jsonl"
    # Item 5 has no answer: reported, not judged. An id from elsewhere: reported too.
    rows = [{"id": it.id, "response": f"model answer {k}"} for k, it in enumerate(items[:5])]
    rows.append({"id": "not-an-arena-id", "response": "x"})
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdict_game1 = ["B>>A", "B>A", "A=B", "A>B", "B>A"]  # game 1: baseline is A
    verdict_game2 = ["A>B", "A=B", "B>A", "B>>A", "nonsense"]  # game 2: model is A

    def rules(call: Call):
        k = int(re.search(r"model answer (\d)", call.user).group(1))
        model_first = call.user.index("model answer") < call.user.index("<|The Start of Assistant B's Answer|>")
        verdict = verdict_game2[k] if model_first else verdict_game1[k]
        return f"My own answer first... My final verdict: [[{verdict}]]"

    with ScriptedOpenAIServer(rules) as server:
        assert (
            eval_main(
                [
                    "run",
                    "arena_hard",
                    "--model",
                    "m",
                    "--responses",
                    str(answers),
                    "--judge",
                    "judge",
                    "--judge-base-url",
                    server.base_url,
                    "--out",
                    str(tmp_path / "arena"),
                    "--limit",
                    "6",
                    "--max-reasks",
                    "1",
                    "--rounds",
                    "100",
                    "--quiet",
                ]
            )
            == 0
        )
        assert server.call_count == 5 * 2 + 1  # the unparseable verdict was asked once more
    scores = json.loads((tmp_path / "arena" / "scores.json").read_text())
    # Model-side battles with arena weights: wins 3+1 (g1) + 1+... counted by hand:
    # g1: B>>A win x3, B>A win, A=B tie, A>B loss, B>A win ; g2: A>B win, A=B tie, B>A loss, B>>A loss x3.
    wins, ties, losses = 3 + 1 + 1 + 1, 1 + 1, 1 + 1 + 3
    p = (2 * wins + ties) / (2 * (wins + ties + losses))
    assert scores["overall"]["value"] == pytest.approx(100 * p, abs=1e-6)
    assert scores["problems"]["missing_responses"] == [items[5].id]
    assert scores["problems"]["unknown_response_ids"] == ["not-an-arena-id"]
    assert scores["problems"]["judge_parse_failure"] == [items[4].id]
    first = arena_messages("Q", "ANSWER-A", "ANSWER-B")
    assert first[0]["content"].startswith("Please act as an impartial judge") and "[[A>>B]]" in first[0]["content"]


def test_alpaca_eval_scores_do_not_depend_on_the_order_judge_replies_arrive():
    items = load_alpaca_eval().items[:12]
    snapshots = alpaca_eval.item_snapshots(items)
    model_won = [k % 3 == 0 or k > 8 for k in range(12)]  # value 2: the second shown output won
    judgments = [
        {"id": it.id, "value": 1 + (model_won[k] != (k % 2 == 1)), "switched": k % 2 == 1, "model_len": 50 + 40 * k}
        for k, it in enumerate(items)
    ]
    arrived = [judgments[k] for k in (10, 4, 1, 6, 2, 7, 11, 3, 0, 9, 5, 8)]  # this order changed the LC fit

    def scores(rows):  # as score_dir aggregates a run directory's judgments
        return alpaca_eval.aggregate(snapshots, in_item_order(snapshots, rows, alpaca_eval.KEY_FIELDS), RunSettings())

    assert scores(arrived) == scores(judgments)


def test_alpaca_eval_from_answer_file(tmp_path):
    items = load_alpaca_eval().items[:12]
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([{"id": it.id, "output": "x" * (50 + 40 * k)} for k, it in enumerate(items)]))
    model_wins = {it.id for k, it in enumerate(items) if k % 3 == 0 or k > 8}

    def rules(call: Call):
        # The model's output is the run of x's; answer with the identifier of the preferred output.
        first_is_model = bool(re.search(r'"model_identifier": "m",\s*"output": """x+"""', call.user))
        item = next(it for it in items if it.prompt in call.user)
        want_model = item.id in model_wins
        return "m" if want_model == first_is_model else "M"

    with ScriptedOpenAIServer(rules) as server:
        assert (
            eval_main(
                [
                    "run",
                    "alpaca_eval",
                    "--model",
                    "m",
                    "--responses",
                    str(answers),
                    "--judge",
                    "judge",
                    "--judge-base-url",
                    server.base_url,
                    "--out",
                    str(tmp_path / "ae"),
                    "--limit",
                    "12",
                    "--annotator",
                    "discrete",
                    "--quiet",
                ]
            )
            == 0
        )
        switched = {it.id for it in items if is_switched(it.id, 0)}
        assert 0 < len(switched) < 12  # both presentation orders occur
    scores = json.loads((tmp_path / "ae" / "scores.json").read_text())
    prefs = [2.0 if it.id in model_wins else 1.0 for it in items]
    want = length_controlled_winrate(
        prefs, [len(it.meta["baseline"]) for it in items], [50 + 40 * k for k in range(12)], list(range(12))
    )
    assert scores["rates"]["win rate"]["value"] == pytest.approx(100 * len(model_wins) / 12)
    assert scores["overall"]["value"] == pytest.approx(want["length_controlled_winrate"])
