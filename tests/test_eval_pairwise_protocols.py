"""Pairwise: the paper's four labels against FastChat's pair-v2, from one scripted judge with known labels.

The judge decides every game from a fixed table (the evaluated model's outcome per item and order) and
answers in whichever format it is asked; the four shares, tie+win and the pair-v2 numbers are computed by
hand below.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, ScriptedOpenAIServer  # noqa: E402

from eval.cli import main as eval_main  # noqa: E402
from eval.parsing import parse_four_label  # noqa: E402

# item -> (game 1 outcome, game 2 outcome) for the evaluated model; game 1 shows the model as A.
OUTCOMES = {
    0: ("win", "win"),
    1: ("win", "both good"),
    2: ("both bad", "both bad"),
    3: ("win", "loss"),  # position bias: the judge picks A both times
    4: ("both good", "both good"),
    5: ("loss", "loss"),
}


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    rubric = {"criteria": "c", "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}}
    rows = [{"source": "Koala", "system": f"Preference {i}: be concise.", "prompt": f"Question number {i}?",
             "reference_answer": "ref", "rubrics": [rubric]} for i in OUTCOMES]
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    baseline = tmp_path / "baseline.jsonl"
    baseline.write_text("".join(json.dumps({"id": str(i), "response": f"baseline answer {i}"}) + "\n"
                                for i in OUTCOMES))
    return bench, baseline


def rules(call: Call) -> str:
    if call.model == "policy":
        return "model answer " + re.search(r"Question number (\d)", call.user).group(1)
    item = int(re.search(r"Question number (\d)", call.user).group(1))
    assert f"Preference {item}: be concise." in call.user  # the judge sees the system message
    model_first = call.user.index("model answer") < call.user.index("baseline answer")
    outcome = OUTCOMES[item][0 if model_first else 1]
    model, other = ("A", "B") if model_first else ("B", "A")
    if "[[BOTH GOOD]]" in call.messages[0]["content"]:  # the four-label prompt
        assert "follows the preferences in the system message" in call.messages[0]["content"]
        label = {"win": model, "loss": other, "both good": "BOTH GOOD", "both bad": "BOTH BAD"}[outcome]
    else:  # pair-v2: "both good" and "both bad" are both a tie
        label = {"win": model, "loss": other}.get(outcome, "C")
    return f"Both responses considered. [[{label}]]"


def run(tmp_path: Path, server: ScriptedOpenAIServer, protocol: str) -> dict:
    bench, baseline = write_inputs(tmp_path)
    out = tmp_path / protocol
    assert eval_main(["run", "pairwise", "--model", "policy", "--base-url", server.base_url, "--judge", "judge",
                      "--judge-base-url", server.base_url, "--bench-file", str(bench), "--baseline", str(baseline),
                      "--protocol", protocol, "--out", str(out), "--rounds", "200", "--quiet"]) == 0
    return json.loads((out / "scores.json").read_text())


def test_four_labels_and_pair_v2_from_the_same_judgments(tmp_path):
    with ScriptedOpenAIServer(rules) as server:
        four = run(tmp_path, server, "four-label")
        pair = run(tmp_path, server, "pair-v2")
        assert len(server.calls_where(lambda c: c.model == "judge")) == 2 * 2 * len(OUTCOMES)

    # Four labels, each order half a vote: win 1 + .5 + .5, both good .5 + 1, both bad 1, loss .5 + 1 (of 6).
    rates = {k: v["value"] for k, v in four["rates"].items()}
    assert rates == pytest.approx({"win": 200 / 6, "both good": 150 / 6, "both bad": 100 / 6, "loss": 150 / 6,
                                   "tie+win": 350 / 6, "position_consistency": 400 / 6})
    assert four["overall"]["value"] == pytest.approx(350 / 6) and four["protocol"] == "four-label"
    for est in four["rates"].values():
        assert est["low"] <= est["value"] <= est["high"] and est["n"] == 6
    report = (tmp_path / "four-label" / "report.md").read_text()
    assert all(f"| {label} |" in report for label in ("win", "both good", "both bad", "loss", "tie+win"))
    assert (tmp_path / "four-label" / "pairwise_four_labels.png").exists()

    # pair-v2 (FastChat's rule: orders that disagree are a tie): win item 0, loss item 5, tie the other four.
    rates = {k: v["value"] for k, v in pair["rates"].items()}
    assert rates == pytest.approx({"win": 100 / 6, "tie": 400 / 6, "loss": 100 / 6, "tie+win": 500 / 6,
                                   "position_consistency": 400 / 6})
    assert pair["counts"]["wins"] == 1 and pair["counts"]["ties"] == 4 and pair["counts"]["losses"] == 1

    # A pairwise run directory from before the protocols (its settings name no protocol) rescores as pair-v2.
    run_json = tmp_path / "pair-v2" / "run.json"
    info = json.loads(run_json.read_text())
    info["settings"] = {"runs": 3, "seed": 0, "rounds": 200, "level": 0.95, "open_model": False,
                        "lc_variant": "minimal", "lc_assets": None, "baseline": {}, "baseline_name": "mistral",
                        "arena_resample": "question"}
    run_json.write_text(json.dumps(info))
    assert eval_main(["rescore", str(tmp_path / "pair-v2")]) == 0
    old = json.loads((tmp_path / "pair-v2" / "scores.json").read_text())
    assert {k: v["value"] for k, v in old["rates"].items()} == pytest.approx(rates)
    assert old["protocol"] == "pair-v2" and old["baseline"] == "mistral"


@pytest.mark.parametrize(("reply", "expected"), [
    ("Both fine. [[BOTH GOOD]]", "both good"),
    ("[[both  bad]]", "both bad"),
    ("Verdict: [[A]]", "A"),
    ("[[B]]", "B"),
    ("Format: [[A]], [[B]], [[BOTH GOOD]] or [[BOTH BAD]].", None),  # several labels: no verdict
    ("[[C]]", None),
    ("", None),
])
def test_four_label_parser(reply, expected):
    assert parse_four_label(reply) == expected
