"""``python -m eval run BENCH --dry-run``: the calls and estimated cost of a run, before anything is called or
written; a resumed run counts only what is left."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, ScriptedOpenAIServer  # noqa: E402

from eval.cli import main as eval_main  # noqa: E402
from janus_jax.llm import price_for  # noqa: E402


def write_bench(tmp_path: Path) -> Path:
    rubric = {"criteria": "c", "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}}
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"source": "Koala", "system": "Be brief.", "prompt": f"Question {k}?",
                                        "reference_answer": "ref", "rubrics": [rubric, rubric]}) + "\n"
                            for k in range(3)))
    return path


def rules(call: Call) -> str:
    return "An answer." if call.model == "policy" else "Feedback: fine. [RESULT] 4"


def args(server: ScriptedOpenAIServer, bench: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "multifaceted", "--model", "policy", "--base-url", server.base_url, "--judge",
            "gpt-4-0125-preview", "--judge-base-url", server.base_url, "--bench-file", str(bench), "--out", str(out),
            "--rounds", "20", "--quiet", *extra]


def plan_lines(printed: str) -> dict[str, str]:
    return {line.split("(")[0].strip(): line for line in printed.splitlines() if line.startswith("  ")}


def test_dry_run_counts_calls_and_cost_and_calls_nothing(tmp_path, capsys):
    bench = write_bench(tmp_path)
    out = tmp_path / "run"
    with ScriptedOpenAIServer(rules) as server:
        assert eval_main(args(server, bench, out, "--dry-run")) == 0
        assert server.call_count == 0
        assert not out.exists()
        lines = plan_lines(capsys.readouterr().out)
        # 3 items, one turn each; 3 items x 2 rubrics x 3 runs judge calls.
        assert "3 calls (0 answered before)" in lines["generation"]
        assert "18 calls" in lines["judge"]
        judge_usd = float(lines["judge"].split("about $")[1])
        prompt = int(lines["judge"].split("~")[1].split(" ")[0])
        completion = int(lines["judge"].split("<=")[1].split(" ")[0])
        price = price_for("gpt-4-0125-preview")
        assert completion == 18 * 1024  # every judge reply at its max_tokens: an upper bound
        assert judge_usd == pytest.approx((prompt * price[0] + completion * price[1]) / 1e6, abs=0.006)
        assert "n/a (no price known)" in lines["generation"]  # a local model named "policy"

        # After the run, nothing is left to call; a larger --runs plans only the new judge runs.
        assert eval_main(args(server, bench, out)) == 0
        capsys.readouterr()
        assert eval_main(args(server, bench, out, "--dry-run")) == 0
        lines = plan_lines(capsys.readouterr().out)
        assert "0 calls (3 answered before)" in lines["generation"] and "0 calls" in lines["judge"]
        assert eval_main(args(server, bench, out, "--dry-run", "--runs", "4")) == 0
        assert "6 calls" in plan_lines(capsys.readouterr().out)["judge"]
