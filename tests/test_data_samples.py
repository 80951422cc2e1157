"""The bundled samples: released schemas, small files, visible styles, and pairs built the Janus way."""

import json
import runpy

from janus_jax.data.records import detect_format, validate
from janus_jax.data.report import DataReport
from janus_jax.data.sources import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"


def rows(name):
    return [json.loads(line) for line in (SAMPLES / f"{name}.jsonl").read_text().splitlines()]


def test_samples_are_valid_small_and_in_the_released_schemas():
    for name, keys in (
        ("sft", {"main_source", "original_source", "preference_set", "system", "prompt", "output"}),
        ("dpo", {"main_source", "original_source", "system", "prompt", "chosen", "rejected"}),
        ("rm", {"input", "chosen", "rejected"}),
    ):
        data = rows(name)
        assert (SAMPLES / f"{name}.jsonl").stat().st_size < 1_000_000
        assert len(data) == 180 and all(set(r) == keys for r in data)
        assert detect_format(data) == name
        report = DataReport()
        assert len(validate(data, name, report, "train")) == 180 and not report.issues


def test_each_instruction_has_three_system_messages_with_distinct_styles():
    by_prompt = {}
    for r in rows("sft"):
        by_prompt.setdefault(r["prompt"], []).append(r)
        assert [p["dimension"] for p in r["preference_set"]] == [
            "style",
            "background_knowledge",
            "informativeness",
            "harmlessness",
        ]
    assert len(by_prompt) == 60
    for group in by_prompt.values():
        assert len({r["system"] for r in group}) == 3 and len({r["output"] for r in group}) == 3


def test_pairs_prefer_the_response_to_the_own_system_message():
    sft = {(r["system"], r["prompt"]): r["output"] for r in rows("sft")}
    outputs_of_prompt = {}
    for r in rows("sft"):
        outputs_of_prompt.setdefault(r["prompt"], set()).add(r["output"])
    for d, m in zip(rows("dpo"), rows("rm"), strict=True):
        chosen, rejected = d["chosen"][-1]["content"], d["rejected"][-1]["content"]
        assert chosen == sft[(d["system"], d["prompt"])]
        assert rejected != chosen and rejected in outputs_of_prompt[d["prompt"]]
        assert (m["input"], m["chosen"], m["rejected"]) == (f"{d['system']}\n{d['prompt']}", chosen, rejected)


def test_generator_reproduces_the_files(tmp_path):
    generator = runpy.run_path(str(SAMPLES / "make_samples.py"))
    for name, data in zip(("sft", "dpo", "rm"), generator["build"](), strict=True):
        generator["write_jsonl"](tmp_path / f"{name}.jsonl", data)
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (SAMPLES / f"{name}.jsonl").read_bytes()
