"""Parsers and filters of data_gen on their own: instruction formats, persona filter, decontamination,
reply validation, templates."""

from __future__ import annotations

import json
import re

import pytest

from data_gen.instructions import PERSONA_PATTERN, Decontaminator, RecordError, extract_prompt, parse_record
from data_gen.preference_sets import DIMENSIONS, TEMPLATE, parse_preference_sets, seed_examples
from data_gen.prompt_templates import load_template, parse_template
from data_gen.rubrics import example_rubrics, parse_rubric
from data_gen.system_messages import clean_system_message


@pytest.mark.parametrize(
    ("record", "prompt"),
    [
        ({"prompt": "Plain text."}, "Plain text."),
        ({"prompt": "\n\nHuman: First turn?\n\nAssistant: Yes.\n\nHuman: Second?\n\nAssistant:"}, "First turn?"),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Later"},
                ]
            },
            "Hi",
        ),
        (
            {"conversations": [{"from": "human", "value": "ShareGPT style"}, {"from": "gpt", "value": "ok"}]},
            "ShareGPT style",
        ),
        ({"conversation_a": [{"role": "user", "content": "Arena"}, {"role": "assistant", "content": "x"}]}, "Arena"),
        ({"instruction": "Translate.", "input": "Bonjour"}, "Translate.\n\nBonjour"),
        ({"turns": ["MT-Bench turn one", "turn two"]}, "MT-Bench turn one"),
        ({"turns": [{"content": "Arena-Hard turn"}]}, "Arena-Hard turn"),
    ],
)
def test_first_user_turn_of_every_source_format(record, prompt):
    assert extract_prompt(record) == prompt


def test_record_errors_name_the_field():
    with pytest.raises(RecordError, match="field 'messages' has no user message"):
        extract_prompt({"messages": [{"role": "assistant", "content": "x"}]})
    with pytest.raises(RecordError, match="field 'id' must be text or an integer, got list"):
        parse_record({"id": [1], "prompt": "x"}, "src")
    with pytest.raises(RecordError, match="field 'original_source' must be text, got dict"):
        parse_record({"prompt": "x", "original_source": {"a": 1}}, "src")
    assert parse_record({"prompt": " x ", "source": ["flan_v2"], "id": 7}, "Nectar") == {
        "id": "7",
        "main_source": "Nectar",
        "original_source": "flan_v2",
        "prompt": "x",
    }


@pytest.mark.parametrize(
    ("prompt", "persona"),
    [
        ("You are a helpful pirate. Greet me.", True),
        ("you're my tutor now", True),
        ("Imagine you are a cat.", True),
        ("Take on the role of a judge and rule.", True),
        ("Take the role of Ada.", True),
        ("\n  You are X", True),
        ("Explain why you are tired after lunch.", False),
        ("Can you imagine a world without bees?", False),
        ("What is the role of RNA?", False),
    ],
)
def test_persona_filter(prompt, persona):
    assert bool(PERSONA_PATTERN.search(prompt)) is persona


def test_decontamination_by_normalised_text_and_13_grams():
    bench = [
        "Write a poem about the sea.",
        "Give me a step by step plan to learn the piano in six months with one hour of practice a day.",
    ]
    check = Decontaminator(bench)
    assert check.match("write a POEM about the sea") == "equal to a benchmark prompt"
    assert "13-gram" in check.match(
        "Please give me a step by step plan to learn the piano in six months with one hour, thanks"
    )
    assert check.match("Write a poem about the mountains.") is None


def preference_reply(sets=3, drop=None, rename=None):
    data = [
        [
            {
                "dimension": d if d != rename else "tone",
                "subdimension": "Clarity",
                "preference": "p",
                "description": f"desc {d}",
            }
            for d in reversed(DIMENSIONS)
            if d != drop
        ]
        for _ in range(sets)
    ]
    return json.dumps({"preference_sets": data})


def test_preference_sets_are_validated_and_put_in_dimension_order():
    parsed = parse_preference_sets("```json\n" + preference_reply() + "\n```")
    assert [[p["dimension"] for p in s] for s in parsed] == [list(DIMENSIONS)] * 3
    assert parsed[0][0]["subdimension"] == "clarity"
    for reply, message in [
        (preference_reply(sets=2), "expected 3 preference sets, got 2"),
        (preference_reply(drop="harmlessness"), "set 1 misses the dimension(s) harmlessness"),
        (preference_reply(rename="style"), "unknown dimension 'tone'"),
        ("no json here", "the reply is not valid JSON"),
        ('{"preference_sets": [[{"dimension": "style"}]]}', "expected 3 preference sets"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_preference_sets(reply)


def test_rubric_parsing_and_system_message_cleaning():
    rubric = {"criteria": "Is it vivid?", "score_descriptions": {str(i): f"s{i}" for i in range(1, 6)}}
    assert parse_rubric(json.dumps({"rubric": rubric})) == rubric
    with pytest.raises(ValueError, match="lacks text for score"):
        parse_rubric(json.dumps({"criteria": "c", "score_descriptions": {"1": "a"}}))
    assert clean_system_message('System message: "You are a guide."') == "You are a guide."
    with pytest.raises(ValueError, match="empty"):
        clean_system_message('""')


def test_templates_are_versioned_and_render_every_placeholder():
    assert TEMPLATE.tag == "preference_sets@1" and len(TEMPLATE.sha256) == 64
    messages = TEMPLATE.messages(instruction="INSTR", seed_examples="SEEDS", worked_example="EX")
    assert "INSTR" in messages[1]["content"] and "$" not in messages[1]["content"]
    assert seed_examples("a", 0) == seed_examples("a", 0) != seed_examples("b", 0)
    rubric = load_template("rubric", 1)
    assert rubric.user.startswith("\n# Example rubrics\n") and rubric.user.endswith("# Generated rubric:\n")
    assert len(example_rubrics("style")) == 3 and "storytelling" not in example_rubrics("style")["example_1"]
    with pytest.raises(KeyError, match="instruction"):
        TEMPLATE.messages(seed_examples="x", worked_example="y")
    with pytest.raises(ValueError, match="missing sampling, user"):
        parse_template("# name: x\n# version: 1\n=== system ===\nhi\n", "inline")
