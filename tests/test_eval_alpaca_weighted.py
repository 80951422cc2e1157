"""AlpacaEval as its leaderboard computes it: the weighted annotation from the judge's log-probabilities of
m/M, the LC variant v1 whenever AlpacaEval's files are at hand, and reports that say which of each."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, Reply, ScriptedOpenAIServer  # noqa: E402

from eval.benches.alpaca_eval import (  # noqa: E402
    BENCHMARK,
    LC_ASSETS,
    is_switched,
    item_snapshots,
    load_alpaca_eval,
    report_lines,
)
from eval.benches.common import RunSettings  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402
from eval.engine import first_token_top_logprobs, rescore_rows  # noqa: E402
from eval.parsing import alpaca_preference_from_logprobs  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
LEADERBOARD_WIN_RATE = 9.177964561962735  # gpt-3.5-turbo-1106, weighted_alpaca_eval_gpt4_turbo
BENCHMARK_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo (preference from the judge's log-probabilities of m/M)"


def swap_letters(top: dict[str, float]) -> dict[str, float]:
    return {("M" if t == "m" else "m" if t == "M" else t): lp for t, lp in top.items()}


def published_rows() -> list[dict]:
    """AlpacaEval's published judge log-probabilities, re-expressed in this project's presentation order.

    AlpacaEval showed the two outputs in its own seeded order; the order it used is the one under which the
    log-probabilities give its recorded preference (checked for every row). Its 4 failed judge calls were
    recorded as draws (1.5); an even m/M split stands in for them.
    """
    rows = []
    for row in map(json.loads, (FIXTURES / "alpaca_weighted" / "gpt35_turbo_1106.jsonl").read_text().splitlines()):
        top = row["top_logprobs"]
        if top is None:
            assert row["preference"] == 1.5
            top = {"m": math.log(0.5), "M": math.log(0.5)}
            theirs_switched = False
        else:
            unswitched = alpaca_preference_from_logprobs(top)
            theirs_switched = abs(unswitched - row["preference"]) > 1e-6
            assert abs((3 - unswitched if theirs_switched else unswitched) - row["preference"]) < 1e-6
        ours_switched = is_switched(str(row["index"]), 0)
        top = swap_letters(top) if ours_switched != theirs_switched else top
        rows.append({"id": str(row["index"]), "switched": ours_switched, "model_len": row["len_output_2"],
                     "parser": "alpaca", "raw": max(("m", "M"), key=lambda t: top.get(t, -math.inf)),
                     "top_logprobs": top, "error_kind": None})
    return rows


def test_weighted_annotations_give_the_leaderboard_win_rate():
    items = load_alpaca_eval().items
    rows, _ = rescore_rows(published_rows(), BENCHMARK.parsers)
    assert all(r["annotation"] == "weighted" for r in rows)
    assert len({r["value"] for r in rows}) > 700  # soft preferences, not letters
    scores = BENCHMARK.aggregate(item_snapshots(items), rows, RunSettings())
    assert scores["rates"]["win rate"]["value"] == pytest.approx(LEADERBOARD_WIN_RATE, abs=0.01)
    assert scores["annotator"] == {"weighted": {"judgments": 805, "annotator": BENCHMARK_ANNOTATOR}}
    # The same replies read as sampled letters (no log-probabilities): AlpacaEval's discrete win rate.
    letters, _ = rescore_rows([{**r, "top_logprobs": None} for r in published_rows()], BENCHMARK.parsers)
    discrete = BENCHMARK.aggregate(item_snapshots(items), letters, RunSettings())
    assert set(discrete["annotator"]) == {"discrete"}
    assert discrete["rates"]["win rate"]["value"] != pytest.approx(LEADERBOARD_WIN_RATE, abs=0.1)


def test_lc_variant_is_v1_when_the_files_are_at_hand_and_the_report_says_so():
    items = load_alpaca_eval().items
    rows, _ = rescore_rows(published_rows(), BENCHMARK.parsers)
    with_files = BENCHMARK.aggregate(item_snapshots(items), rows,
                                     RunSettings(options={LC_ASSETS.dest: str(FIXTURES / "alpaca_lc" / "assets")}))
    assert with_files["lc_variant"] == "v1" and with_files["counts"]["lc_variant"] == "v1"
    assert str(FIXTURES / "alpaca_lc" / "assets") in with_files["lc_assets"]
    lines = report_lines(with_files)
    assert f"Annotator: {BENCHMARK_ANNOTATOR}, 805 judgments." in lines
    assert any(line.startswith("LC variant: v1 (AlpacaEval assets: ") for line in lines)


def test_without_the_files_lc_is_minimal_and_the_report_says_why(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))  # nothing downloaded
    items = load_alpaca_eval().items
    rows, _ = rescore_rows(published_rows(), BENCHMARK.parsers)
    scores = BENCHMARK.aggregate(item_snapshots(items), rows, RunSettings())
    assert scores["lc_variant"] == "minimal" and scores["lc_assets"] is None
    assert "LC variant: minimal (AlpacaEval's df_gamed.csv not at hand: the leaderboard uses v1)." in \
        report_lines(scores)


def test_the_client_field_the_engine_reads():
    """ChatResult.logprobs in OpenAI's layout; the first token's top alternatives are kept."""
    from janus_jax.llm import ChatResult

    def token(tok, top):
        return {"token": tok, "logprob": top[tok], "bytes": None,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()]}

    result = ChatResult(texts=["Mx"], logprobs=[[token("M", {"M": -0.1, "m": -2.4}), token("x", {"x": -1.0})]])
    assert first_token_top_logprobs(result) == {"M": -0.1, "m": -2.4}
    assert first_token_top_logprobs(ChatResult(texts=["M"])) is None  # the call did not ask for them


def test_weighted_preferences_over_real_http(tmp_path):
    """The judge's log-probabilities travel over HTTP from a local server into the weighted preferences."""
    items = load_alpaca_eval().items[:12]
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([{"id": it.id, "output": "x" * (50 + 40 * k)} for k, it in enumerate(items)]))
    p_model = {it.id: 0.05 + 0.9 * k / 11 for k, it in enumerate(items)}  # P(the model's output is better)

    def rules(call: Call):
        assert call.body.get("logprobs") is True and call.body.get("top_logprobs") == 5
        first_is_model = bool(re.search(r'"model_identifier": "m",\s*"output": """x+"""', call.user))
        item = next(it for it in items if it.prompt in call.user)
        p_m = p_model[item.id] if first_is_model else 1 - p_model[item.id]
        top = {"m": math.log(p_m), "M": math.log(1 - p_m), "The": -12.0}
        top = dict(sorted(top.items(), key=lambda kv: -kv[1]))
        return Reply(next(iter(top)), top_logprobs=[top])

    with ScriptedOpenAIServer(rules) as server:
        assert eval_main(["run", "alpaca_eval", "--model", "m", "--responses", str(answers), "--judge", "judge",
                          "--judge-base-url", server.base_url, "--out", str(tmp_path / "ae"), "--limit", "12",
                          "--quiet"]) == 0
    scores = json.loads((tmp_path / "ae" / "scores.json").read_text())
    assert scores["rates"]["win rate"]["value"] == pytest.approx(100 * sum(p_model.values()) / 12, abs=1e-6)
    assert scores["annotator"]["weighted"]["judgments"] == 12
    assert "Annotator: weighted_alpaca_eval_gpt4_turbo" in (tmp_path / "ae" / "report.md").read_text()
