"""README's "Adding a benchmark", followed literally: one module file in eval/benches/ and one registry line,
then ``python -m eval run`` generates from a local endpoint, judges with a scripted judge on 127.0.0.1,
aggregates and reports it, with no other file touched."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, ScriptedOpenAIServer  # noqa: E402

import eval.benches  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402

# The whole benchmark: a file like this one, saved as eval/benches/echo_words.py.
TOY_MODULE = textwrap.dedent('''
    """Echo words: the model is asked to repeat a word; the judge says whether it did."""

    import re

    from eval.benches.common import Benchmark, Item, JudgeParser, Loaded, Option, limited
    from eval.engine import JudgeJob
    from eval.stats import bootstrap_mean

    WORDS = ["apple", "river", "candle", "mountain"]
    SHOUT = Option("shout", "no", "ask for the word in capitals", choices=("no", "yes"))


    def load(settings, limit):
        shout = settings.get(SHOUT) == "yes"
        items = [Item(id=str(i), turns=[f"Repeat the word {w.upper() if shout else w}."], meta={"word": w})
                 for i, w in enumerate(WORDS)]
        return limited(Loaded(items), limit)


    def judge_jobs(items, answers, settings):
        return [JudgeJob({"id": it.id}, [{"role": "user", "content": f"Word: {it.meta['word']}\\n"
                                           f"Answer: {answers[it.id][0]}\\nDid the answer repeat the word? "
                                           "Reply [[YES]] or [[NO]]."}],
                         {"temperature": 0.0, "max_tokens": 16}, "yes_no")
                for it in items if it.id in answers]


    def parse_yes_no(text):
        found = set(re.findall(r"\\[\\[(YES|NO)\\]\\]", text))
        return found.pop() if len(found) == 1 else None


    def aggregate(snapshots, judgments, settings, responses=None):
        rows = [r for r in judgments if r.get("value") is not None]
        overall = bootstrap_mean([100.0 * (r["value"] == "YES") for r in rows], None, settings.rounds,
                                 settings.seed, settings.level).to_dict()
        failed = [str(r["id"]) for r in judgments if r.get("value") is None]
        return {"metric": "echoed (%)", "overall": overall, "counts": {"judged": len(rows)},
                "problems": {"judge_parse_failure": failed} if failed else {}}


    BENCHMARK = Benchmark(
        name="echo_words",
        title="Echo words",
        load=load,
        key_fields=("id",),
        item_snapshots=lambda items: [{"id": it.id} for it in items],
        generation_options=lambda item, settings: {"temperature": 0.0, "max_tokens": 8},
        judge_jobs=judge_jobs,
        parsers={"yes_no": JudgeParser(parse_yes_no)},
        template_hash=lambda settings: "echo-v1",
        aggregate=aggregate,
        options=(SHOUT,),
        report_lines=lambda scores: ["The judge checks that the word was repeated."],
    )
''')


@pytest.fixture
def toy_registered(tmp_path, monkeypatch):
    """Save the module into the benches package (a second folder of it) and add its registry line."""
    package = tmp_path / "benches"
    package.mkdir()
    (package / "echo_words.py").write_text(TOY_MODULE)
    monkeypatch.setattr(eval.benches, "__path__", [*eval.benches.__path__, str(package)])
    monkeypatch.setattr(eval.benches, "REGISTRY", [*eval.benches.REGISTRY, "echo_words"])
    yield
    sys.modules.pop("eval.benches.echo_words", None)


def rules(call: Call) -> str:
    if call.model == "policy":
        word = re.search(r"Repeat the word (\w+)", call.user).group(1)
        return word if word.lower() != "candle" else "I will not."  # one of four is not echoed
    word = re.search(r"Word: (\w+)", call.user).group(1)
    answer = re.search(r"Answer: (.*)", call.user).group(1)
    if word == "mountain" and call.attempt == 0:
        return "Hmm."  # no verdict: asked again, then answered
    return "[[YES]]" if word.lower() == answer.lower() else "[[NO]]"


def test_a_benchmark_added_in_one_file_runs_end_to_end(tmp_path, toy_registered):
    out = tmp_path / "run"
    with ScriptedOpenAIServer(rules) as server:
        code = eval_main(["run", "echo_words", "--model", "policy", "--base-url", server.base_url,
                          "--judge", "judge", "--judge-base-url", server.base_url, "--out", str(out),
                          "--shout", "yes", "--rounds", "100", "--quiet"])
        policy_prompts = [c.user for c in server.calls_where(lambda c: c.model == "policy")]
        judge_calls = len(server.calls_where(lambda c: c.model == "judge"))
    assert code == 0
    assert sorted(policy_prompts) == sorted(f"Repeat the word {w.upper()}." for w in
                                            ["apple", "river", "candle", "mountain"])  # its own option reached it
    assert judge_calls == 4 + 1  # one re-ask of the reply without a verdict
    scores = json.loads((out / "scores.json").read_text())
    assert scores["benchmark"] == "echo_words" and scores["metric"] == "echoed (%)"
    assert scores["overall"]["value"] == pytest.approx(75.0)
    assert scores["counts"] == {"judged": 4}
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["settings"]["options"] == {"shout": "yes"} and run_info["template_hash"] == "echo-v1"
    report = (out / "report.md").read_text()
    assert "| Model | Echo words |" in report and "## Echo words: policy" in report
    assert "The judge checks that the word was repeated." in report
    # rescore and compare find it through the same registry.
    assert eval_main(["rescore", str(out)]) == 0
    assert eval_main(["compare", str(out), "--out", str(tmp_path / "cmp")]) == 0
    assert "75.00" in (tmp_path / "cmp" / "report.md").read_text()


def test_every_registered_benchmark_is_a_run_command(capsys):
    with pytest.raises(SystemExit):
        eval_main(["run", "--help"])
    listed = capsys.readouterr().out
    for name in eval.benches.REGISTRY:
        assert name in listed
