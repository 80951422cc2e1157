"""End to end through the real ``openai`` client against a scripted OpenAI-compatible server on 127.0.0.1.

The scripted server plays both the evaluated model ("policy") and the judge; the judge's verdicts are a
fixed function of what it is shown, so every number in the report is recomputed here by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, Fault, ScriptedOpenAIServer  # noqa: E402

from eval import DATA_DIR  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402
from janus_jax.jsonio import read_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KOALA = read_jsonl(DATA_DIR / "sources" / "koala_test_set.jsonl")[0]["prompt"]
MT_81 = read_jsonl(DATA_DIR / "mt_bench" / "question.jsonl")[0]["turns"][0]


def answer_for(system: str, prompt: str) -> str:
    return "Answer " + hashlib.sha256(f"{system}|{prompt}".encode()).hexdigest()[:10]


def bench_rows() -> list[dict]:
    def rubric(r: int) -> dict:
        return {"criteria": f"criterion-{r}", "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}}

    prefs = [
        {"dimension": d, "subdimension": "s", "preference": "p", "description": "d"} for d in ("style", "harmlessness")
    ]
    return [
        {
            "source": "Koala",
            "preference_set": prefs,
            "system": "You are terse.",
            "prompt": KOALA,
            "reference_answer": "ref 0",
            "rubrics": [rubric(0), rubric(1)],
        },
        {
            "source": "Koala",
            "preference_set": prefs,
            "system": "You are playful.",
            "prompt": KOALA,
            "reference_answer": "ref 1",
            "rubrics": [rubric(0), rubric(1)],
        },
        {
            "source": "mt_bench",
            "preference_set": prefs,
            "system": "You are a travel writer.",
            "prompt": MT_81,
            "reference_answer": "ref 2",
            "rubrics": [rubric(0), rubric(1)],
        },
        {
            "source": "Koala",
            "preference_set": prefs,
            "system": "x",
            "prompt": "a row without rubrics",
            "reference_answer": "ref 3",
        },
    ]


def scripted_score(item: int, rubric: int, run: int) -> int:
    return 1 + (item * 3 + rubric * 2 + run) % 5


NEVER_PARSES = (2, 0, 0)  # (item, rubric, run): the judge never gives a score -> a recorded failure
REASKED = (0, 1, 2)  # first reply has no score, the re-ask has one


class Script:
    """Rules for the policy (answers) and the Multifaceted Bench judge."""

    def __init__(self, rows: list[dict]):
        self.answer_to_item = {answer_for(r["system"], r["prompt"]): i for i, r in enumerate(rows)}
        self.hang_after: int | None = None
        self.judge_calls = 0
        self.reask_skipped = False
        self._lock = threading.Lock()  # the server answers from several threads

    def __call__(self, call: Call):
        if call.model == "policy":
            system = call.system
            return answer_for(system, call.user)
        with self._lock:
            self.judge_calls += 1
            hang = self.hang_after is not None and self.judge_calls > self.hang_after
        response = re.search(r"###Response to evaluate:\n(.*?)\n\n###Reference", call.user, re.DOTALL).group(1)
        item = self.answer_to_item[response]
        rubric = int(re.search(r'"criteria": "criterion-(\d)"', call.user).group(1))
        run = int(call.body["seed"])
        if hang:
            # The server counts this unanswered call as attempt 0, so after a resume the same request
            # is its attempt 1 and parses at once: one re-ask fewer than an uninterrupted run.
            self.reask_skipped |= (item, rubric, run) == REASKED and call.attempt == 0
            return Fault.hang(60.0)
        if (item, rubric, run) == NEVER_PARSES:
            return "Feedback: I cannot decide on this one."
        if (item, rubric, run) == REASKED and call.attempt == 0:
            return "Feedback: thorough, but I forgot the verdict."
        # Feedback quoting a different number before the verdict must not fool the parser.
        return (
            f"Feedback: it would deserve a score of 4 if it were shorter. [RESULT] {scripted_score(item, rubric, run)}"
        )


def expected_multifaceted() -> dict:
    item_scores = {}
    for item in range(3):
        per_run = []
        for run in range(3):
            values = [scripted_score(item, r, run) for r in range(2) if (item, r, run) != NEVER_PARSES]
            per_run.append(np.mean(values))
        item_scores[item] = float(np.mean(per_run))
    dims = {}
    for r, dim in enumerate(("style", "harmlessness")):
        dims[dim] = float(
            np.mean(
                [
                    np.mean([scripted_score(i, r, run) for run in range(3) if (i, r, run) != NEVER_PARSES])
                    for i in range(3)
                ]
            )
        )
    return {
        "items": item_scores,
        "overall": float(np.mean(list(item_scores.values()))),
        "dims": dims,
        "koala": (item_scores[0] + item_scores[1]) / 2,
        "mt": item_scores[2],
    }


def write_bench(tmp_path: Path) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in bench_rows()))
    return path


def multifaceted_args(server: ScriptedOpenAIServer, bench: Path, out: Path) -> list[str]:
    return [
        "run",
        "multifaceted",
        "--model",
        "policy",
        "--base-url",
        server.base_url,
        "--judge",
        "judge",
        "--judge-base-url",
        server.base_url,
        "--bench-file",
        str(bench),
        "--out",
        str(out),
        "--max-reasks",
        "2",
        "--rounds",
        "200",
        "--quiet",
    ]


def test_multifaceted_report_matches_hand_computation(tmp_path):
    bench = write_bench(tmp_path)
    script = Script(bench_rows())
    with ScriptedOpenAIServer(script) as server:
        assert eval_main(multifaceted_args(server, bench, tmp_path / "run")) == 0
        judge_calls = len(server.calls_where(lambda c: c.model == "judge"))
    # 3 items x 2 rubrics x 3 runs, + 1 re-ask, + 2 re-asks of the reply that never parses.
    assert judge_calls == 18 + 1 + 2
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    want = expected_multifaceted()
    assert scores["overall"]["value"] == pytest.approx(want["overall"])
    assert scores["by_subset"]["mf-Koala"]["value"] == pytest.approx(want["koala"])
    assert scores["by_subset"]["mf-MT-Bench"]["value"] == pytest.approx(want["mt"])
    for dim, value in want["dims"].items():
        assert scores["by_dimension"][dim]["value"] == pytest.approx(value)
    assert scores["overall"]["low"] <= scores["overall"]["value"] <= scores["overall"]["high"]
    # Bad input is reported with ids and counted, not dropped.
    assert scores["problems"]["judge_parse_failure"] == ["2"]
    assert scores["problems"]["bad_bench_rows"] == ["3: no rubrics (neither 'rubrics' nor 'rubric')"]
    assert scores["counts"]["judge_calls_scored"] == 17
    rows = [json.loads(x) for x in (tmp_path / "run" / "judgments.jsonl").read_text().splitlines()]
    row = next(r for r in rows if (r["id"], r["rubric"], r["run"]) == ("0", 0, 0))
    assert row["judge"] == "judge" and row["parser_version"] and row["template_hash"]
    assert row["sampling"] == {"temperature": 1.0, "top_p": 0.9, "max_tokens": 1024, "seed": 0}
    assert row["raw"].startswith("Feedback:") and row["value"] == scripted_score(0, 0, 0)
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"{want['overall']:.2f}" in report and "judge_parse_failure" in report
    assert (tmp_path / "run" / "scores_by_benchmark.png").stat().st_size > 10_000

    # rescore re-parses the stored raw replies without any call (the server is gone).
    assert eval_main(["rescore", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "scores.json").read_text())["overall"] == scores["overall"]


def test_multifaceted_reads_the_parquet_bench_data_gen_writes(tmp_path):
    """data_gen writes final/bench/train.parquet with its BENCH schema: list and struct columns, which a
    pandas reader turns into numpy arrays ("truth value of an array is ambiguous"). Same scores as JSONL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_gen.schemas import SPLIT_SCHEMAS

    bench = tmp_path / "final" / "bench" / "train.parquet"
    bench.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(bench_rows(), schema=SPLIT_SCHEMAS["bench"]), bench)
    with ScriptedOpenAIServer(Script(bench_rows())) as server:
        assert eval_main(multifaceted_args(server, bench, tmp_path / "run")) == 0
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["overall"]["value"] == pytest.approx(expected_multifaceted()["overall"])
    assert scores["problems"]["bad_bench_rows"] == ["3: no rubrics (neither 'rubrics' nor 'rubric')"]


def test_killed_run_resumes_without_repeating_judge_calls(tmp_path):
    bench = write_bench(tmp_path)
    reference = Script(bench_rows())
    with ScriptedOpenAIServer(reference) as server:
        assert eval_main(multifaceted_args(server, bench, tmp_path / "reference")) == 0
    total = reference.judge_calls

    script = Script(bench_rows())
    script.hang_after = 8  # answer 8 judge calls, then leave every further call hanging
    with ScriptedOpenAIServer(script) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "eval", *multifaceted_args(server, bench, tmp_path / "run")],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while script.judge_calls <= 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the 8 answers reach the client's cache
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered_before_kill = 8
        assert not (tmp_path / "run" / "scores.json").exists()

        script.hang_after = None
        script.judge_calls = 0
        assert eval_main(multifaceted_args(server, bench, tmp_path / "run")) == 0
        # Every answered call came back from the cache: together exactly one uninterrupted run's calls.
        assert answered_before_kill + script.judge_calls == total - script.reask_skipped
        script.judge_calls = 0
        assert eval_main(multifaceted_args(server, bench, tmp_path / "run")) == 0
        assert script.judge_calls == 0  # a finished run is not judged again
    want = expected_multifaceted()
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["overall"]["value"] == pytest.approx(want["overall"])


def pairwise_rules(rows: list[dict]):
    """Item 0: the policy always wins; 1: the judge always picks position A (inconsistent -> tie);
    2: the baseline always wins; 3 (koala prompt, other system): [[C]] both times."""
    policy = {answer_for(r["system"], r["prompt"]): i for i, r in enumerate(rows)}

    def rules(call: Call):
        if call.model == "policy":
            return answer_for(call.system, call.user)
        a = re.search(r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End", call.user, re.DOTALL).group(1)
        b = re.search(r"\[The Start of Assistant B's Answer\]\n(.*?)\n\[The End", call.user, re.DOTALL).group(1)
        item = policy.get(a, policy.get(b))
        assert rows[item]["system"] in call.user  # the judge sees the system message
        if item == 0:
            return "[[A]]" if a in policy else "[[B]]"
        if item == 1:
            return "Position A reads better. [[A]]"
        if item == 2:
            return "[[B]]" if a in policy else "[[A]]"
        return "Equally good. [[C]]"

    return rules


def test_pairwise_rates_and_consistency(tmp_path):
    rows = bench_rows()[:3] + [dict(bench_rows()[0], system="You are formal.")]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(rows))
    baseline = tmp_path / "baseline.jsonl"
    lines = [{"id": str(i), "response": f"baseline answer {i}"} for i in range(4)]
    lines.append({"id": "99", "response": "an answer for a prompt that is not in this bench"})
    baseline.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with ScriptedOpenAIServer(pairwise_rules(rows)) as server:
        assert (
            eval_main(
                [
                    "run",
                    "pairwise",
                    "--model",
                    "policy",
                    "--base-url",
                    server.base_url,
                    "--judge",
                    "judge",
                    "--judge-base-url",
                    server.base_url,
                    "--bench-file",
                    str(bench),
                    "--baseline",
                    str(baseline),
                    "--protocol",
                    "pair-v2",
                    "--out",
                    str(tmp_path / "pair"),
                    "--rounds",
                    "200",
                    "--quiet",
                ]
            )
            == 0
        )
        assert len(server.calls_where(lambda c: c.model == "judge")) == 8  # 4 items x 2 orders
    scores = json.loads((tmp_path / "pair" / "scores.json").read_text())
    rates = {k: v["value"] for k, v in scores["rates"].items()}
    assert rates == pytest.approx(
        {"win": 25.0, "tie": 50.0, "loss": 25.0, "tie+win": 75.0, "position_consistency": 75.0}
    )
    assert scores["problems"]["baseline_unknown_ids"] == ["99"]
    assert (tmp_path / "pair" / "win_tie_loss.png").exists()


def mt_rating(qid: int, turn: int) -> int:
    return 1 + (qid * 7 + turn * 3) % 10


def test_mt_bench_two_turns_and_reference_grading(tmp_path):
    questions = {str(r["question_id"]): r for r in read_jsonl(DATA_DIR / "mt_bench" / "question.jsonl")}

    def rules(call: Call):
        if call.model == "policy":
            turn = sum(1 for m in call.messages if m["role"] == "user")
            return f"answer to turn {turn}: {call.user[:30]}"
        qid = next(q for q, r in questions.items() if r["turns"][0] in call.user)
        turn = 2 if "<|The Start of Assistant A's Conversation with User|>" in call.user else 1
        if turn == 2:
            assert "answer to turn 1" in call.user and "answer to turn 2" in call.user
        if questions[qid]["category"] in ("math", "reasoning", "coding"):
            assert "Reference" in call.user  # reference-guided prompt
        return f'Format: "Rating: [[5]]". Verdict: Rating: [[{mt_rating(int(qid), turn)}]]'

    with ScriptedOpenAIServer(rules) as server:
        assert (
            eval_main(
                [
                    "run",
                    "mt_bench",
                    "--model",
                    "policy",
                    "--base-url",
                    server.base_url,
                    "--judge",
                    "judge",
                    "--judge-base-url",
                    server.base_url,
                    "--out",
                    str(tmp_path / "mt"),
                    "--rounds",
                    "200",
                    "--quiet",
                ]
            )
            == 0
        )
        temps = {c.body["temperature"] for c in server.calls_where(lambda c: c.model == "policy")}
    assert temps == {0.7, 0.0, 0.1}  # FastChat's per-category temperatures
    scores = json.loads((tmp_path / "mt" / "scores.json").read_text())
    want = [mt_rating(int(q), t) for q in questions for t in (1, 2)]
    assert scores["overall"]["value"] == pytest.approx(np.mean(want))
    assert scores["by_turn"]["turn 2"]["value"] == pytest.approx(np.mean([mt_rating(int(q), 2) for q in questions]))
    assert scores["counts"]["judgments"] == 160
