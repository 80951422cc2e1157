"""``python -m eval paper-table TABLE``: the dry run of each table is the sum of its benchmarks' dry runs; the
helpfulness table runs for real on a tiny checkpoint (one janus-serve) against a scripted judge over HTTP,
names the benchmark that produced nothing usable, and resumes without repeating a call."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, Fault, Reply, ScriptedOpenAIServer  # noqa: E402

from eval import DATA_DIR  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402
from eval.paper_tables import TABLES  # noqa: E402
from eval.runner import ModelSpec  # noqa: E402

pytest_plugins = ["tiny_checkpoints"]  # tiny_checkpoint, random_checkpoint

BENCH_EXAMPLE = str(DATA_DIR / "janus" / "bench_example.json")  # the bundled Multifaceted Bench row
PAPER_JUDGES = {"multifaceted": "gpt-4-0125-preview", "alpaca_eval": "gpt-4-1106-preview", "mt_bench": "gpt-4",
                "arena_hard": "gpt-4-1106-preview"}

CKPT = ModelSpec("m", checkpoint="runs/m")  # the evaluated model of the column tests


def plan_numbers(printed: str) -> dict[str, float]:
    """Calls, tokens and dollars of the ``generation`` / ``judge`` lines of one or more dry runs, summed."""
    sums = {k: 0.0 for k in ("gen_calls", "gen_prompt", "gen_completion", "judge_calls", "judge_prompt",
                             "judge_completion", "judge_usd")}
    for line in printed.splitlines():
        found = re.match(r"  (generation|judge) \(.*?\): (\d+) calls.*?~(\d+) prompt \+ <=(\d+) completion", line)
        if not found:
            continue
        part = "gen" if found[1] == "generation" else "judge"
        for key, value in zip(("calls", "prompt", "completion"), found.groups()[1:], strict=True):
            sums[f"{part}_{key}"] += int(value)
        usd = re.search(r"about \$([\d.]+)", line)
        if part == "judge" and usd:
            sums["judge_usd"] += float(usd[1])
    return sums


def total_numbers(printed: str) -> dict[str, float]:
    line = next(line for line in printed.splitlines() if line.startswith("total ("))
    gen, judge = line.split("; judge ")
    numbers = [int(x) for x in re.findall(r"(\d+) calls, ~(\d+) prompt \+ <=(\d+)", gen)[0]]
    numbers += [int(x) for x in re.findall(r"(\d+) calls, ~(\d+) prompt \+ <=(\d+)", judge)[0]]
    keys = ("gen_calls", "gen_prompt", "gen_completion", "judge_calls", "judge_prompt", "judge_completion")
    return {**dict(zip(keys, numbers, strict=True)), "judge_usd": float(re.search(r"about \$([\d.]+)", judge)[1])}


@pytest.mark.parametrize("table", ["multifaceted", "helpfulness", "harmlessness"])
def test_dry_run_is_the_sum_of_the_benchmarks_dry_runs(table, tmp_path, capsys):
    out = tmp_path / "table"
    extra = ["--bench-file", BENCH_EXAMPLE] if table == "multifaceted" else []
    assert eval_main(["paper-table", table, "--checkpoint", "runs/janus_7b", "--out", str(out), "--dry-run",
                      *extra]) == 0
    printed = capsys.readouterr().out
    assert not out.exists()  # nothing written (and no server: the checkpoint does not even exist)

    alone = ""
    for recipe in TABLES[table].benches:
        judge = ["--judge", PAPER_JUDGES[recipe.bench]] if recipe.bench in PAPER_JUDGES else []
        options = [f"--{k.replace('_', '-')}={v}" for k, v in recipe.options.items()]
        assert eval_main(["run", recipe.bench, "--checkpoint", "runs/janus_7b", "--out", str(out / recipe.bench),
                          "--dry-run", *judge, *options, *extra]) == 0
        alone += capsys.readouterr().out
    expected, total = plan_numbers(alone), total_numbers(printed)
    assert plan_numbers(printed) == expected  # each benchmark's lines as `eval run BENCH --dry-run` prints them
    assert {k: v for k, v in total.items() if k != "judge_usd"} == {k: v for k, v in expected.items()
                                                                     if k != "judge_usd"}
    assert total["judge_usd"] == pytest.approx(expected["judge_usd"], abs=0.005 * len(TABLES[table].benches))
    assert expected["gen_calls"] > 0
    if table == "harmlessness":  # the Perspective API scores toxicity: no LLM judge, 25 samples of 20 tokens
        assert total["judge_calls"] == 0 and total["gen_completion"] == total["gen_calls"] * 25 * 20
    else:
        assert total["judge_calls"] > 0 and total["judge_usd"] > 0


# ----------------------------------------------------------------------------------------------------------
# A real run of the helpfulness table
# ----------------------------------------------------------------------------------------------------------


class Judge:
    """The three helpfulness judges, told apart by request: AlpacaEval asks for log-probabilities, MT-Bench's
    judge is gpt-4, Arena-Hard's the rest. ``refuse_arena``: Arena-Hard's judge answers HTTP 403."""

    def __init__(self) -> None:
        self.refuse_arena = False
        self.calls: dict[str, int] = {"alpaca_eval": 0, "mt_bench": 0, "arena_hard": 0}

    def __call__(self, call: Call):
        weight = len(call.user) % 7  # varies with the item and the presentation order
        if call.body.get("logprobs"):
            self.calls["alpaca_eval"] += 1
            p_first = 0.2 + 0.1 * weight
            top = {"m": math.log(p_first), "M": math.log(1 - p_first)}
            return Reply(max(top, key=top.get), top_logprobs=[top])
        if call.model == "gpt-4":
            self.calls["mt_bench"] += 1
            return f"Fine. Rating: [[{2 + weight}]]"
        self.calls["arena_hard"] += 1
        if self.refuse_arena:
            return Fault.status_code(403, message="quota exhausted")
        return f"My final verdict is [[{('A>B', 'B>A', 'A=B', 'A>>B', 'B>>A', 'A>B', 'B>A')[weight]}]]"


LIMIT = 3  # items of each benchmark


def test_helpfulness_table_of_a_model_already_served_elsewhere(tmp_path, capsys):
    """`paper-table --model NAME --base-url URL`: the model is asked at its endpoint (as vLLM would serve released
    weights), no janus-serve is started, and the table names the endpoint."""
    judge, asked = Judge(), []

    def rules(call: Call):
        if call.model == "released-janus":
            asked.append(call.body)
            return "Hello"
        return judge(call)

    out = tmp_path / "helpfulness"
    with ScriptedOpenAIServer(rules) as server:
        url = server.base_url
        command = ["paper-table", "helpfulness", "--model", "released-janus", "--base-url", url,
                   "--judge-base-url", url, "--out", str(out), "--limit", "2", "--rounds", "50", "--quiet"]
        assert eval_main(command) == 0
    printed = capsys.readouterr().out
    assert "Started server process" not in printed
    assert len(asked) == 2 + 2 * 2 + 2  # AlpacaEval, MT-Bench's two turns, Arena-Hard
    assert all(body.get("repetition_penalty") == 1.03 for body in asked)  # the paper's open-model setting
    table = json.loads((out / "table.json").read_text())
    assert table["model"] == "released-janus" and table["checkpoint"] is None and not table["failed"]
    assert all(c["value"] is not None for c in table["columns"])
    assert f"Model `released-janus` at `{url}`" in (out / "table.md").read_text()


# 45 s on 2 cores (a janus-serve and three benchmarks): make test-all. make test keeps the dry runs and the
# columns below, and eval --checkpoint in test_chain.py.
@pytest.mark.slow
def test_helpfulness_table_on_a_tiny_checkpoint_names_a_failed_benchmark_and_resumes(tiny_checkpoint, tmp_path,
                                                                                     capfd, monkeypatch):
    from tiny_checkpoints import served

    monkeypatch.delenv("JANUS_SERVE_API_KEY", raising=False)
    out = tmp_path / "helpfulness"
    judge = Judge()
    with ScriptedOpenAIServer(judge) as server:
        command = ["paper-table", "helpfulness", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                   "--judge-base-url", server.base_url, "--limit", str(LIMIT), "--rounds", "50",
                   "--quiet"]
        # 1. Arena-Hard's judge refuses: the other columns are filled, the exit says which benchmark failed.
        judge.refuse_arena = True
        assert eval_main(command) == 1
        printed = capfd.readouterr()
        assert "error: benchmark arena_hard produced nothing usable" in printed.err
        # One server for the three benchmarks: AlpacaEval's, MT-Bench's two turns' and Arena-Hard's answers.
        assert served(printed.out + printed.err) == (1, LIMIT + LIMIT * 2 + LIMIT)
        answers = [json.loads(line)["answers"] for line in (out / "arena_hard" / "responses.jsonl").open()]
        assert answers == [["Hello"]] * LIMIT  # the one-word model, served by janus-serve
        first = json.loads((out / "table.json").read_text())
        assert first["failed"].keys() == {"arena_hard"}
        assert [c["value"] is not None for c in first["columns"]] == [True, True, True, False]

        # 2. Rerun with the judge back: only Arena-Hard's judge calls are made; with every answer stored, no
        # janus-serve is started.
        judge.refuse_arena = False
        before = dict(judge.calls)
        assert eval_main(command) == 0
        printed = capfd.readouterr()
        assert served(printed.out + printed.err) == (0, 0)
        made = {k: judge.calls[k] - before[k] for k in before}
        assert made == {"alpaca_eval": 0, "mt_bench": 0, "arena_hard": 2 * LIMIT}

        # 3. A finished table reruns without any call and without starting janus-serve.
        calls = server.call_count
        assert eval_main(command) == 0
        printed = capfd.readouterr()
        assert server.call_count == calls and served(printed.out + printed.err) == (0, 0)

    run_info = json.loads((out / "arena_hard" / "run.json").read_text())
    assert (run_info["checkpoint"], run_info["model_base_url"]) == (str(tiny_checkpoint), None)
    table = json.loads((out / "table.json").read_text())
    scores = {b: json.loads((out / b / "scores.json").read_text()) for b in ("alpaca_eval", "mt_bench", "arena_hard")}
    rates = scores["alpaca_eval"]["rates"]
    expected = [rates["length-controlled win rate"], rates["win rate"], scores["mt_bench"]["overall"],
                scores["arena_hard"]["overall"]]
    assert [c["label"] for c in table["columns"]] == ["AlpacaEval 2.0 LC WR (%)", "AlpacaEval 2.0 WR (%)",
                                                      "MT-Bench [0,10]", "Arena-Hard v0.1 [0,100]"]
    for column, estimate in zip(table["columns"], expected, strict=True):
        assert (column["value"], column["low"], column["high"]) == (estimate["value"], estimate["low"],
                                                                    estimate["high"])
    assert [c["paper"] for c in table["columns"]] == [26.9, 27.8, 7.7, 20.9]
    assert not table["failed"] and table["model"] == "tiny-janus"
    assert {b: i["judge"] for b, i in table["benchmarks"].items()} == {
        "alpaca_eval": "gpt-4-1106-preview", "mt_bench": "gpt-4", "arena_hard": "gpt-4-1106-preview"}
    markdown = (out / "table.md").read_text()
    assert "| Janus 7B (paper) | 26.9 | 27.8 | 7.7 | 20.9 |" in markdown
    assert f"| tiny-janus | {rates['length-controlled win rate']['value']:.1f} [" in markdown
    assert f"only the first {LIMIT} items of each benchmark (--limit)" in markdown  # not the paper's protocol


# ----------------------------------------------------------------------------------------------------------
# Table 4's columns, from RealToxicityPrompts' own aggregation
# ----------------------------------------------------------------------------------------------------------


def test_harmlessness_columns_read_the_rtp_scores_and_name_what_is_missing():
    from eval.benches.common import RunSettings
    from eval.benches.rtp import BENCHMARK as RTP
    from eval.paper_tables import judges, table_markdown, table_result

    table = TABLES["harmlessness"]
    samples = {"a": ["the cat sat", "a dog ran far"], "b": ["so it goes", "so it goes on"]}
    toxicity = {("a", 0): 0.1, ("a", 1): 0.7, ("b", 0): 0.2, ("b", 1): 0.3}
    ppl = {("a", 0): 10.0, ("a", 1): 20.0, ("b", 0): 30.0, ("b", 1): 40.0}
    snapshots = [{"id": i, "cluster": i, "prompt": f"prompt {i}"} for i in samples]
    responses = {i: {"id": i, "answers": [s], "error": None} for i, s in samples.items()}
    rows = [{"id": i, "sample": k, "kind": "toxicity", "value": v} for (i, k), v in toxicity.items()]
    rows += [{"id": i, "sample": k, "kind": "ppl", "value": v} for (i, k), v in ppl.items()]

    paper = RunSettings(options={"toxicity": "judge", "samples": 25, "ppl_model": "openai-community/gpt2-xl"})
    scores = RTP.aggregate(snapshots, rows, paper, responses=responses)
    specs = judges(table, {"rtp": paper}, "local-judge")
    result = table_result(table, CKPT, {"rtp": scores}, {}, specs, {"rtp": paper}, None)
    values = {c["label"]: c["value"] for c in result["columns"]}
    assert values == {"Avg. max toxicity ↓": pytest.approx((0.7 + 0.3) / 2), "Toxic prob ↓": 0.5,
                      "Output PPL ↓": 25.0, "dist-2 ↑": scores["dist-2"], "dist-3 ↑": scores["dist-3"]}
    assert [c["paper"] for c in result["columns"]] == [0.256, 0.061, 14.58, 0.93, 0.95]
    assert result["not_the_papers_protocol"] == [
        "rtp: judged by local-judge, the paper used no LLM judge",
        "rtp: toxicity = 'judge', the paper's is 'perspective'"]

    # Without a toxicity scorer or a perplexity model those columns have no value, and the table says so.
    bare = RunSettings(options={"toxicity": "none", "samples": 25, "ppl_model": None})
    scores = RTP.aggregate(snapshots, [], bare, responses=responses)
    assert judges(table, {"rtp": bare}) == {"rtp": None}
    result = table_result(table, CKPT, {"rtp": scores}, {}, {"rtp": None}, {"rtp": bare}, None)
    assert [c["value"] is None for c in result["columns"]] == [True, True, True, False, False]
    markdown = table_markdown(result)
    assert "**No value** (see the benchmark's report for why): Avg. max toxicity ↓ (rtp), Toxic prob ↓ (rtp), " \
           "Output PPL ↓ (rtp)." in markdown
    assert "| Janus 7B (paper) | 0.256 | 0.061 | 14.58 | 0.93 | 0.95 |" in markdown


def test_multifaceted_columns_are_the_per_source_and_overall_scores():
    from eval.benches.common import RunSettings
    from eval.benches.multifaceted import BENCHMARK as MF
    from eval.paper_tables import judges, table_markdown, table_result

    table = TABLES["multifaceted"]
    subsets = {"0": "mf-AlpacaEval", "1": "mf-AlpacaEval", "2": "mf-Koala", "3": "mf-Self-Instruct"}
    snapshots = [{"id": i, "cluster": i, "subset": s, "dimensions": ["style"], "n_rubrics": 1} for i, s in
                 subsets.items()]
    judgments = [{"id": i, "rubric": 0, "run": run, "value": 2 + int(i) % 3 + run % 2} for i in subsets
                 for run in range(3)]
    settings = RunSettings(rounds=50, options={"runs": 3})
    scores = MF.aggregate(snapshots, judgments, settings)
    result = table_result(table, CKPT, {"multifaceted": scores}, {}, judges(table, {"multifaceted": settings}),
                          {"multifaceted": settings}, None)
    columns = {c["label"]: c for c in result["columns"]}
    assert list(columns) == ["mf-AlpacaEval", "mf-FLASK", "mf-Koala", "mf-MT-Bench", "mf-Self-Instruct", "Average"]
    for label in ("mf-AlpacaEval", "mf-Koala", "mf-Self-Instruct"):
        assert columns[label]["value"] == scores["by_subset"][label]["value"]
    assert columns["Average"]["value"] == scores["overall"]["value"]
    assert columns["mf-FLASK"]["value"] is None and columns["mf-MT-Bench"]["value"] is None  # no item from them
    assert result["benchmarks"]["multifaceted"]["judge"] == "gpt-4-0125-preview"
    assert not result["not_the_papers_protocol"]
    assert "| Janus 7B (paper) | 4.43 | 4.06 | 4.41 | 4.11 | 4.01 | 4.17 |" in table_markdown(result)


def test_harmlessness_without_a_perspective_key_fails_before_serving(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    out = tmp_path / "table4"
    # The checkpoint does not exist: the key is checked before janus-serve would start.
    assert eval_main(["paper-table", "harmlessness", "--checkpoint", str(tmp_path / "none"), "--out", str(out),
                      "--quiet"]) == 2
    assert "error: rtp: Perspective API scorer: set PERSPECTIVE_API_KEY" in capsys.readouterr().err
    assert not (out / "rtp" / "responses.jsonl").exists()
