"""A command that produced nothing usable exits non-zero with the reason in its last lines, and its
summary names the top failure reasons with counts (replays of runs that used to exit 0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, Fault, ScriptedOpenAIServer  # noqa: E402

from data_gen.cli import main as data_gen_main  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402

FAST = ["--timeout-s", "2", "--max-retries", "1", "--retry-backoff-s", "0.01", "--no-progress"]


def refuse_key(call: Call):
    return Fault.status_code(401, message="Incorrect API key provided")


def test_data_gen_with_every_call_refused_exits_non_zero(tmp_path, capsys):
    src = tmp_path / "instructions.jsonl"
    src.write_text("".join(json.dumps({"id": f"i{k}", "prompt": f"Explain topic {k} in depth."}) + "\n"
                           for k in range(3)))
    with ScriptedOpenAIServer(refuse_key) as server:
        code = data_gen_main(["run", "--instructions", str(src), "--out", str(tmp_path / "out"), "--model", "m",
                              "--base-url", server.base_url, *FAST])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines()[-1] == (
        "error: nothing usable was produced: every call of stage preference_sets failed (3 of 3); no row was written")
    assert "top failure reasons:" in captured.out and "3x preference_sets: http_401: HTTP 401" in captured.out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["failure_reasons"][0]["count"] == 3 and "401" in manifest["failure_reasons"][0]["reason"]


def bench_file(tmp_path: Path, rows: int = 2) -> Path:
    rubric = {"criteria": "c", "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}}
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"source": "Koala", "system": "Be brief.", "prompt": f"Question {k}?",
                                        "reference_answer": "ref", "rubrics": [rubric]}) + "\n" for k in range(rows)))
    return path


def run_eval(server: ScriptedOpenAIServer, bench: Path, out: Path) -> int:
    return eval_main(["run", "multifaceted", "--model", "policy", "--base-url", server.base_url, "--judge", "judge",
                      "--judge-base-url", server.base_url, "--bench-file", str(bench), "--out", str(out),
                      "--runs", "1", "--max-reasks", "1", "--rounds", "50", "--quiet"])


def test_eval_with_every_judge_call_refused_exits_non_zero(tmp_path, capsys):
    def rules(call: Call):
        return "An answer." if call.model == "policy" else refuse_key(call)

    with ScriptedOpenAIServer(rules) as server:
        code = run_eval(server, bench_file(tmp_path), tmp_path / "run")
    captured = capsys.readouterr()
    assert code == 1
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: multifaceted: no score: nothing was answered and judged successfully")
    assert "judge_api_failure 2" in last and "top failures: 2x http_401: HTTP 401" in last
    assert "top failure reasons:" in captured.out and "2x http_401" in captured.out
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["failure_reasons"][0]["count"] == 2
    assert "Top failure reasons: 2x http_401" in (tmp_path / "run" / "report.md").read_text()
    assert eval_main(["rescore", str(tmp_path / "run")]) == 1  # still nothing to score


def test_eval_with_every_judgment_unreadable_exits_non_zero(tmp_path, capsys):
    def rules(call: Call):
        return "An answer." if call.model == "policy" else "Feedback: fine, I suppose."

    with ScriptedOpenAIServer(rules) as server:
        code = run_eval(server, bench_file(tmp_path), tmp_path / "run")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert "judge_parse_failure 2" in last and "2x invalid_reply: no absolute verdict in the reply" in last


def test_eval_with_no_usable_bench_row_exits_non_zero(tmp_path, capsys):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"prompt": "Q?", "reference_answer": "r"}) + "\n")
    with ScriptedOpenAIServer(lambda call: "unused") as server:
        code = run_eval(server, bench, tmp_path / "run")
        assert server.call_count == 0
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: multifaceted: no usable item to evaluate (bad_bench_rows 1)")
