"""Row validation: every malformed row is reported with its index and reason, and counted."""

import pytest

from janus_jax.data.records import detect_format, validate
from janus_jax.data.report import (
    CHOSEN_EQUALS_REJECTED,
    EMPTY_FIELD,
    MISSING_FIELD,
    NO_ASSISTANT_MESSAGE,
    WRONG_TYPE,
    DataReport,
)


def sft(system="You are terse.", prompt="Name a color.", output="Red."):
    return {
        "main_source": "m",
        "original_source": "o",
        "preference_set": [],
        "system": system,
        "prompt": prompt,
        "output": output,
    }


def dpo(chosen="Red.", rejected="- Red\n- Blue", system="You are terse."):
    def msgs(text):
        return [{"content": "Name a color.", "role": "user"}, {"content": text, "role": "assistant"}]

    return {"system": system, "prompt": "Name a color.", "chosen": msgs(chosen), "rejected": msgs(rejected)}


def test_sft_validation_reports_each_bad_row():
    no_output = sft()
    del no_output["output"]
    rows = [sft(), no_output, sft(prompt=3), sft(output="  \n"), sft(system=""), "not a row", None]
    report = DataReport()
    records = validate(rows, "sft", report, "train")
    assert [r.row for r in records] == [0, 4]
    assert records[1].prompt_text == "[INST] Name a color. [/INST]"  # empty system message is allowed
    got = [(i.row, i.kind) for i in report.issues]
    assert got == [(1, MISSING_FIELD), (2, WRONG_TYPE), (3, EMPTY_FIELD), (5, WRONG_TYPE)]
    assert "'output'" in report.issues[0].detail and "'prompt'" in report.issues[1].detail
    assert report.counts == {EMPTY_FIELD: 1, MISSING_FIELD: 1, WRONG_TYPE: 2}
    assert str(report.issues[0]) == "train row 1: missing_field: missing field 'output'"


def test_dpo_validation():
    no_assistant = dpo()
    no_assistant["rejected"] = [{"content": "x", "role": "user"}]
    string_chosen = dpo()
    string_chosen["chosen"] = "Red."
    rows = [dpo(), dpo(chosen="Same.", rejected="Same."), no_assistant, string_chosen, dpo(rejected="")]
    report = DataReport()
    pairs = validate(rows, "dpo", report, "train")
    assert len(pairs) == 1
    assert pairs[0].chosen == "Red." and pairs[0].prompt_text == "[INST] You are terse.\nName a color. [/INST]"
    got = [(i.row, i.kind) for i in report.issues]
    assert got == [(1, CHOSEN_EQUALS_REJECTED), (2, NO_ASSISTANT_MESSAGE), (3, WRONG_TYPE), (4, EMPTY_FIELD)]
    assert "rejected[1]" in report.issues[3].detail


def test_dpo_takes_the_last_assistant_message():
    row = dpo()
    row["chosen"] = [
        {"content": "first", "role": "assistant"},
        {"content": "u", "role": "user"},
        {"content": "last", "role": "assistant"},
    ]
    (pair,) = validate([row], "dpo", DataReport(), "train")
    assert pair.chosen == "last"


def test_rm_validation():
    rows = [
        {"input": "You are terse.\nName a color.", "chosen": "Red.", "rejected": "- Red"},
        {"input": "x", "chosen": "a", "rejected": "a"},
        {"input": "x", "chosen": 1, "rejected": "a"},
    ]
    report = DataReport()
    (pair,) = validate(rows, "rm", report, "train")
    assert pair.prompt_text == "[INST] You are terse.\nName a color. [/INST]"
    assert [(i.row, i.kind) for i in report.issues] == [(1, CHOSEN_EQUALS_REJECTED), (2, WRONG_TYPE)]


def test_detect_format():
    assert detect_format([None, sft()]) == "sft"
    assert detect_format([dpo()]) == "dpo"
    assert detect_format([{"input": "a", "chosen": "b", "rejected": "c"}]) == "rm"
    with pytest.raises(ValueError, match="cannot detect the data format from fields"):
        detect_format([{"question": "q"}])
    with pytest.raises(ValueError, match="data.format must be one of"):
        validate([sft()], "chat", DataReport(), "train")
