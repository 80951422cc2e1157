"""build-bench: prompts drawn offline from the five shipped sources, the data_gen stages run against a
scripted LLM on 127.0.0.1, and the result is a Multifaceted-Bench-format file that `eval` loads and maps."""

import json
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scripted_openai_server import Call, ScriptedOpenAIServer  # noqa: E402

from eval.benches.multifaceted import load_multifaceted  # noqa: E402
from eval.build_bench import draw_prompts  # noqa: E402
from eval.cli import main as eval_main  # noqa: E402
from eval.source_map import map_sources  # noqa: E402

DIMENSIONS = ("style", "background_knowledge", "informativeness", "harmlessness")


def stage_rules(call: Call):
    if "rubric generator" in call.system:
        return json.dumps({"criteria": "Does it follow the preference?",
                           "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}})
    if "anticipate how different people" in call.system:
        sets = [[{"dimension": d, "subdimension": "sub", "preference": f"pref {s} {d}",
                  "description": f"desc {s} {d}"} for d in DIMENSIONS] for s in range(3)]
        return json.dumps({"preference_sets": sets})
    if "You write system messages" in call.system:
        # One per preference set: a prompt's three reference-answer requests must differ, or the
        # client's cache would answer some of them depending on timing.
        return f"You are an assistant who keeps answers short ({zlib.crc32(call.user.encode()):08x})."
    return "A gold answer."


def test_draw_prompts_is_seeded_and_covers_sources():
    a = draw_prompts(2, seed=3)
    assert a == draw_prompts(2, seed=3) and a != draw_prompts(2, seed=4)
    assert sorted({r["source"] for r in a}) == ["AlpacaEval", "FLASK", "Koala", "MT-Bench", "Self-Instruct"]
    assert len(a) == 10


def test_build_bench_end_to_end(tmp_path):
    out = tmp_path / "bench.jsonl"
    with ScriptedOpenAIServer(stage_rules) as server:
        assert eval_main(["build-bench", "--model", "writer", "--base-url", server.base_url, "--out", str(out),
                          "--per-source", "1", "--sources", "koala", "mt_bench", "--quiet"]) == 0
        calls = server.call_count
        # 2 prompts: 2 preference-set calls, 6 system messages, 6 reference answers, 24 rubrics.
        assert calls == 2 + 6 + 6 + 24
        assert eval_main(["build-bench", "--model", "writer", "--base-url", server.base_url, "--out", str(out),
                          "--per-source", "1", "--sources", "koala", "mt_bench", "--quiet"]) == 0
        assert server.call_count == calls  # resumed entirely from the stage files and the cache
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and len({(row["system"], row["prompt"]) for row in rows}) == 6
    assert set(rows[0]) == {"source", "preference_set", "system", "prompt", "reference_answer", "rubrics"}
    loaded = load_multifaceted(str(out))
    assert len(loaded.items) == 6 and not loaded.bad_rows
    mapping = map_sources([(it.id, it.prompt, it.category) for it in loaded.items])
    assert sorted(set(mapping.subset_of.values())) == ["mf-Koala", "mf-MT-Bench"]
