"""Janus-RM stage 2 data: HH-RLHF, oasst1 pairwise and WebGPT rows, in their published formats, become RM pairs."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs import rm
from data_gen.helpfulness import convert_rows, main, shares
from janus_jax.data import build_data, default_data_config

HH_ROWS = [
    {  # single turn
        "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: I don't know.",
    },
    {  # two turns: the dialogue so far is the input
        "chosen": "\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\nAssistant: An apple.",
        "rejected": "\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: Name a fruit.\n\nAssistant: No.",
    },
    {  # the transcripts part before the last reply
        "chosen": "\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: Bye.\n\nAssistant: Bye!",
        "rejected": "\n\nHuman: Hi!\n\nAssistant: Go away.\n\nHuman: Bye.\n\nAssistant: Bye!",
    },
    {  # identical replies
        "chosen": "\n\nHuman: Say yes.\n\nAssistant: Yes.",
        "rejected": "\n\nHuman: Say yes.\n\nAssistant: Yes.",
    },
]
OASST_ROWS = [
    {"lang": "en", "parent_id": "p1", "prompt": "prompter: How do I boil an egg?",
     "chosen": "Put it in boiling water for 8 minutes.", "rejected": "Eggs are laid by hens."},
    {"lang": "de", "parent_id": "p2", "prompt": "prompter: Write a haiku.\nassistant: Leaves fall\nslowly down.\n"
     "prompter: Another, about snow.", "chosen": "Snow on the\nquiet roofs.", "rejected": "No."},
    {"lang": "en", "parent_id": "p3", "prompt": "assistant: I start the conversation.", "chosen": "a", "rejected": "b"},
    {"lang": "en", "parent_id": "p4", "prompt": "Hello without a role", "chosen": "a", "rejected": "b"},
]
WEBGPT_ROWS = [
    {"question": {"full_text": "Why is the sky blue?", "id": "q1", "dataset": "eli5"},
     "quotes_0": {"title": [], "extract": []}, "answer_0": "Rayleigh scattering [1].", "tokens_0": [], "score_0": 1.0,
     "quotes_1": {"title": [], "extract": []}, "answer_1": "Because it is.", "tokens_1": [], "score_1": -1.0},
    {"question": {"full_text": "Do fish sleep?", "id": "q2", "dataset": "eli5"},
     "answer_0": "No.", "score_0": -0.5, "answer_1": "They rest in a sleep-like state.", "score_1": 0.5},
    {"question": {"full_text": "Tie?", "id": "q3", "dataset": "eli5"},
     "answer_0": "A.", "score_0": 0.0, "answer_1": "B.", "score_1": 0.0},
    {"question": {"full_text": "Empty?", "id": "q4", "dataset": "eli5"},
     "answer_0": "", "score_0": 1.0, "answer_1": "B.", "score_1": 0.0},
]


def test_each_source_converts_to_the_rm_schema():
    hh, hh_bad = convert_rows("hh", HH_ROWS)
    assert [(p["input"], p["chosen"], p["rejected"]) for p in hh] == [
        ("What is the capital of France?", "Paris.", "I don't know."),
        ("Human: Hi!\n\nAssistant: Hello.\n\nHuman: Name a fruit.", "An apple.", "No."),
    ]
    assert hh_bad == [
        {"source": "hh", "row": 2, "reason": "chosen and rejected transcripts differ before the last assistant reply"},
        {"source": "hh", "row": 3, "reason": "chosen and rejected replies are identical"},
    ]
    oasst, oasst_bad = convert_rows("oasst", OASST_ROWS)
    assert [(p["input"], p["chosen"]) for p in oasst] == [
        ("How do I boil an egg?", "Put it in boiling water for 8 minutes."),
        ("Human: Write a haiku.\n\nAssistant: Leaves fall\nslowly down.\n\nHuman: Another, about snow.",
         "Snow on the\nquiet roofs."),
    ]
    assert oasst_bad == [{"source": "oasst", "row": 2, "reason": "the dialogue does not end with a human turn"},
                         {"source": "oasst", "row": 3, "reason": "the prompt does not start with 'prompter: '"}]
    webgpt, webgpt_bad = convert_rows("webgpt", [*WEBGPT_ROWS, None])
    assert [(p["input"], p["chosen"], p["rejected"]) for p in webgpt] == [
        ("Why is the sky blue?", "Rayleigh scattering [1].", "Because it is."),
        ("Do fish sleep?", "They rest in a sleep-like state.", "No."),
    ]
    assert [(b["row"], b["reason"]) for b in webgpt_bad] == [
        (2, "equal scores: no preference"), (3, "field 'answer_0' is empty"), (4, "not a JSON object")]
    assert [p["source_row"] for p in webgpt] == [0, 1]


def test_shares_add_up_to_the_total():
    paper = {"hh": 0.72, "oasst": 0.14, "webgpt": 0.14}
    assert shares(66_000, paper) == {"hh": 47_520, "oasst": 9_240, "webgpt": 9_240}
    assert sum(shares(7, {"a": 1, "b": 1, "c": 1}).values()) == 7


def _write_published(tmp_path):
    """The three datasets as their hubs publish them: HH as .jsonl.gz, oasst1 pairwise as parquet, WebGPT as JSONL."""
    hh = tmp_path / "helpful-base-train.jsonl.gz"
    with gzip.open(hh, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in HH_ROWS * 5) + "{not json\n")
    oasst = tmp_path / "oasst-train.parquet"
    pq.write_table(pa.Table.from_pylist(OASST_ROWS * 3), oasst)
    webgpt = tmp_path / "webgpt-comparisons.jsonl"
    webgpt.write_text("".join(json.dumps(r) + "\n" for r in WEBGPT_ROWS * 3))
    return hh, oasst, webgpt


def test_command_writes_the_mix_and_reports_every_row_left_out(tmp_path):
    hh, oasst, webgpt = _write_published(tmp_path)
    out = tmp_path / "rm_helpful"
    args = ["--hh", str(hh), "--oasst", str(oasst), "--webgpt", str(webgpt), "--out", str(out), "--pairs", "10"]
    assert main(args) == 0
    pairs = [json.loads(line) for line in (out / "rm_helpful.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    assert len(pairs) == report["pairs"] == 10
    assert report["drawn"] == {"hh": 7, "oasst": 2, "webgpt": 1} == dict(
        (s, sum(p["source"] == s for p in pairs)) for s in ("hh", "oasst", "webgpt"))
    assert report["rows_read"] == {"hh": 21, "oasst": 12, "webgpt": 12}
    assert report["converted"] == {"hh": 10, "oasst": 6, "webgpt": 6}
    assert report["not_converted"]["hh: not a JSON object"] == 1 and len(report["problems"]) == 11 + 6 + 6
    assert all(p["file"] for p in report["problems"])
    assert main(args) == 0 and [json.loads(x) for x in (out / "rm_helpful.jsonl").read_text().splitlines()] == pairs

    cfg = default_data_config()
    cfg.update(source=str(out / "rm_helpful.jsonl"), format="", packing=False, seq_len=256)
    bundle = build_data(cfg, global_batch_size=2, num_epochs=1, process_index=0, process_count=1)
    assert bundle.format == "rm" and len(bundle.train.chosen) == 10 and not bundle.report.issues

    with pytest.raises(ValueError, match="not enough pairs for 100 .*hh: 10 pairs for a share of 72"):
        main([*args[:-1], "100"])


def test_stage_two_preset_follows_train_rm_helpful_sh():
    stage1, stage2 = rm.get_config("janus_rm_7b"), rm.get_config("janus_rm_7b_helpful")
    assert stage2.model.init_from == "runs/janus_rm_7b" and stage2.data.source == "data/rm_helpful/rm_helpful.jsonl"
    assert (stage2.optimizer.lr, stage2.train.global_batch_size, stage2.train.num_epochs, stage2.data.seq_len) == (
        9e-6, 128, 1, 2048)
    assert (stage2.optimizer.b2, stage2.optimizer.warmup_ratio, stage2.data.template) == (0.95, 0.03, "mistral_inst")
    changed = {k for k in ("model", "data", "optimizer", "train") for f in stage1[k] if stage1[k][f] != stage2[k][f]}
    assert changed == {"model", "data"}
