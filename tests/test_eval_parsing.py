"""Judge-reply parsers: every absolute-grading case of the reference parser's own test suite, plus the
tricky forms that decide scores in practice."""

import pytest

from eval.parsing import (
    alpaca_preference_from_logprobs,
    parse_absolute,
    parse_alpaca_choice,
    parse_arena,
    parse_pairwise,
    parse_rating,
)

# (reply, expected score): the absolute-mode cases of prometheus-eval's tests/test_parser.py
# (prometheus-eval/prometheus-eval @ dcfb44272d5d), the parser family Janus's utils/output_parser.py belongs to.
REFERENCE_CASES = [
    ("Excellent. [RESULT] 5 out of 5", 5),
    ("Poor performance. [RESULT] score of 1", 1),
    ("Good job. [Result] 3", 3),
    ("Needs improvement. [Result] Score: 2", 2),
    ("Well done. [Result] Result: 4", 4),
    ("Average. [Result] 4/5", 4),
    ("Excellent. [Result] 5 out of 5", 5),
    ("Poor performance. [Result] score of 1", 1),
    ("Good job. (Score 5)", 5),
    ("Good job. [Score 4]", 4),
    ("Good job. score: 3", 3),
    ("Good job. Score: 3", 3),
    ("Good job. score of 1", 1),
    ("Good job. [RESULT] (5)", 5),
    ("The score is definitely not 3.", None),
    ("I rate this a perfect 10!", None),
    ("Score: 2.5", None),
    ("Result: A", None),
]


@pytest.mark.parametrize("reply,expected", REFERENCE_CASES)
def test_absolute_reference_cases(reply, expected):
    assert parse_absolute(reply)[1] == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        # Feedback quoting another score before the verdict: the verdict after [RESULT] wins.
        ("Feedback: The response would deserve a score of 4 if it were concise. [RESULT] 3", 3),
        ("Feedback: Score: 5 for style, but the rubric asks for more. [RESULT] 2", 2),
        ("Feedback: good.\n\n[RESULT] **4**", 4),
        ("Feedback: ok [RESULT]: 4", 4),
        ("Feedback: ok [RESULT: 2]", 2),
        ("feedback: fine [result] 1", 1),
        # Two [RESULT] tags (the judge restated its verdict): the last one wins.
        ("[RESULT] 2 ... on reflection [RESULT] 5", 5),
        # Out of range or unreadable after [RESULT]: a failure, not the earlier number in the feedback.
        ("Feedback: a score of 4 seems fair. [RESULT] 10", None),
        ("Feedback: a score of 4 seems fair. [RESULT] 0", None),
        ("Feedback: a score of 4 seems fair. [RESULT] excellent", None),
        ("Feedback: thorough and well argued.", None),
        ("[RESULT] 3.5", None),
    ],
)
def test_absolute_tricky_forms(reply, expected):
    assert parse_absolute(reply)[1] == expected


def test_absolute_feedback_is_text_before_verdict():
    feedback, score = parse_absolute("Feedback: Clear and well structured. [RESULT] 4")
    assert (feedback, score) == ("Clear and well structured.", 4)
    feedback, score = parse_absolute("The answer ignores the rubric.")
    assert (feedback, score) == ("The answer ignores the rubric.", None)


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_absolute_empty_reply(empty):
    assert parse_absolute(empty) == (None, None)


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("The answer is right. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ('Format: "Rating: [[5]]". My verdict: Rating: [[3]]', 3.0),
        ("Rating: [9]", 9.0),
        ("Rating: [[11]]", None),
        ("Rating: 7/10", None),
        ("", None),
    ],
)
def test_mt_bench_rating(reply, expected):
    assert parse_rating(reply) == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("A is better. [[A]]", "A"),
        ("[[B]]", "B"),
        ("Both equal: [[C]]", "tie"),
        ("I considered [[A]] but settle on [[B]]", None),
        ("no verdict", None),
    ],
)
def test_pairwise_verdict(reply, expected):
    assert parse_pairwise(reply) == expected


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("My final verdict is tie: [[A=B]]", "A=B"),
        ("[[A>>B]]", "A>>B"),
        ("Assistant B is slightly better: [[B>A]]", "B>A"),
        ("[[A>B]] ... [[A>B]]", "A>B"),
        ("[[A>B]] or maybe [[B>A]]", None),
        ("[[A<B]]", None),
        ("no label", None),
    ],
)
def test_arena_verdict(reply, expected):
    assert parse_arena(reply) == expected


def test_alpaca_parsers():
    assert parse_alpaca_choice("m") == 1
    assert parse_alpaca_choice("M") == 2
    assert parse_alpaca_choice("x") is None
    import math

    pref = alpaca_preference_from_logprobs({"m": math.log(0.75), "M": math.log(0.25), "x": -1.0})
    assert pref == pytest.approx(1.25)
    assert alpaca_preference_from_logprobs({"a": -0.1}) is None


@pytest.mark.parametrize(
    "reply,expected",
    [
        # A score quoted from the rubric or the reference answer, with no verdict: not a score.
        ("Feedback: The rubric's top level (Score 5) asks for a complete plan. The response covers half of it.", None),
        ("Feedback: The reference answer, which would earn a Score: 5, lists three steps.\nThis one lists one.", None),
        ('The rubric reads "(Score 5) The response fully aligns". The response is partly aligned.', None),
        # The verdict in the last sentence is read, even after a quoted one.
        ("Feedback: The rubric's (Score 5) needs all steps; two are missing. Overall: (Score 3)", 3),
        ("Feedback: clear, but misses the user's preference for brevity.\n\nScore: 2", 2),
        ("Feedback: quoted (Score 5) criteria are not met. I give it a score of 2.", 2),
    ],
)
def test_absolute_quoted_rubric_scores_are_not_verdicts(reply, expected):
    assert parse_absolute(reply)[1] == expected


def test_a_reply_quoting_the_rubric_is_asked_again(tmp_path):
    """End to end: the first reply only quotes "(Score 5)" from the rubric, the re-ask gives the verdict."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from scripted_openai_server import ScriptedOpenAIServer

    from eval.cli import main as eval_main

    rubric = {"criteria": "c", "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}}
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"source": "Koala", "system": "s", "prompt": "Q?", "reference_answer": "r",
                                 "rubrics": [rubric]}) + "\n")

    def rules(call):
        if call.model == "policy":
            return "An answer."
        if call.attempt == 0:
            return "Feedback: For (Score 5) the rubric wants every step. The answer gives one step."
        return "Feedback: one step only. [RESULT] 2"

    with ScriptedOpenAIServer(rules) as server:
        assert eval_main(["run", "multifaceted", "--model", "policy", "--base-url", server.base_url, "--judge", "j",
                          "--judge-base-url", server.base_url, "--bench-file", str(bench), "--out",
                          str(tmp_path / "run"), "--runs", "1", "--rounds", "20", "--quiet"]) == 0
    row = json.loads((tmp_path / "run" / "judgments.jsonl").read_text().splitlines()[0])
    assert row["value"] == 2 and row["attempts"] == 2
