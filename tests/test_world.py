"""The synthetic preference world: value ids, gold replies, held-out system messages, bad configs, CLI."""

import json

import pytest

from data_gen.world import VALUE_IDS, WorldConfig, WorldError, build_world, write_world
from data_gen.world.__main__ import main as world_main
from data_gen.world.checker import satisfies, word_count
from data_gen.world.generate import rubric
from data_gen.world.records import Record
from data_gen.world.values import DIMENSIONS, combination
from janus_jax.data.pipeline import select_system_messages
from janus_jax.data.records import validate
from janus_jax.data.report import DataReport

SMALL = WorldConfig(train_instructions=40, heldout_instructions=6)


@pytest.fixture(scope="module")
def world():
    return build_world(SMALL)


def test_required_value_ids_exist():
    for v in ("format=json", "format=numbered", "format=bullets", "format=paragraph", "length=short",
              "length=detailed"):
        assert v in VALUE_IDS
    assert {v.split("=")[0] for v in VALUE_IDS} == {"format", "length", "audience", "safety"}


def test_rows_keep_the_released_schema_and_their_value_ids(world):
    row = world["sft.jsonl"][0]
    assert {"main_source", "original_source", "preference_set", "system", "prompt", "output"} <= set(row)
    assert [p["preference"] for p in row["preference_set"]] == row["value_ids"]
    pair = world["dpo.jsonl"][0]
    assert pair["chosen"][-1]["role"] == "assistant"
    assert all(p["chosen"][-1]["content"] != p["rejected"][-1]["content"] for p in world["dpo.jsonl"])
    assert len(world["dpo.jsonl"]) > 2 * SMALL.train_instructions
    item = world["bench.jsonl"][0]
    assert {"source", "preference_set", "system", "prompt", "reference_answer", "rubrics"} <= set(item)
    assert all(f"[{v}]" in r["criteria"] for v, r in zip(item["value_ids"], item["rubrics"], strict=True))
    assert len(world["sft.jsonl"]) == 3 * SMALL.train_instructions
    assert len(world["bench.jsonl"]) == 2 * SMALL.heldout_instructions


def test_gold_replies_satisfy_their_values_and_not_the_opposite_format(world):
    for row in world["sft.jsonl"]:
        record = Record(**row["record"])
        assert all(satisfies(v, row["output"], record) for v in row["value_ids"])
        style = row["value_ids"][0]
        others = [v for v in VALUE_IDS if v.startswith("format=") and v != style]
        assert not any(satisfies(v, row["output"], record) for v in others), (style, row["output"])


def test_checker_on_hand_written_replies():
    record = Record(name="Kalo", kind="fern", origin="Peru", color="red", use="tea", term="resin",
                    definition="a sticky tree fluid", risk="its spines can cut", intro="Describe.")
    assert satisfies("format=json", '{"a": 1}', record) and not satisfies("format=json", "[1]", record)
    assert satisfies("format=numbered", "1. a\n2. b", record) and not satisfies("format=numbered", "1. a\n3. b", record)
    assert satisfies("format=bullets", "- a\n- b", record) and not satisfies("format=bullets", "- a\nb", record)
    assert satisfies("format=paragraph", "One line.", record) and not satisfies("format=paragraph", "a\nb", record)
    assert word_count("- one two\n- three") == 3
    assert not satisfies("length=short", " ".join(["w"] * 26), record)
    assert satisfies("length=detailed", "fern Peru red tea", record)
    assert not satisfies("length=detailed", "fern Peru red", record)
    assert satisfies("audience=novice", "resin (a sticky tree fluid)", record)
    assert satisfies("audience=expert", "resin", record)
    assert not satisfies("audience=expert", "resin (a sticky tree fluid)", record)
    assert satisfies("safety=caution", "Caution: its spines can cut.", record)
    assert not satisfies("safety=caution", "Nice fern.", record) and not satisfies("safety=plain", "Caution!", record)


def test_unseen_system_messages_never_occur_in_training(world):
    train = {r["system"] for r in world["sft.jsonl"]}
    unseen = [b for b in world["bench.jsonl"] if not b["seen_system_message"]]
    seen = [b for b in world["bench.jsonl"] if b["seen_system_message"]]
    assert unseen and seen
    assert not {b["system"] for b in unseen} & train
    assert {b["system"] for b in seen} <= train
    # The control's system messages are in the rows every condition trains on (k = 1 keeps them).
    kept = select_system_messages(validate(world["sft.jsonl"], "sft", DataReport(), "t"), 1)
    assert {b["system"] for b in seen} <= {e.system for e in kept}
    assert not {r["system"] for r in world["sft_heldout.jsonl"]} & train
    held = {tuple(c) for c in SMALL.held_out()}
    assert all(tuple(b["value_ids"]) in held for b in unseen)
    assert not any(tuple(r["value_ids"]) in held for r in world["sft.jsonl"])
    bench_prompts = {b["prompt"] for b in world["bench.jsonl"]}
    assert not bench_prompts & {r["prompt"] for r in world["sft.jsonl"]}


def test_held_out_combinations_weigh_every_value_alike():
    """8 of 32 combinations: each format twice, each value of the other dimensions 4 times, whatever the seed."""
    for seed in range(4):
        held = WorldConfig(seed=seed).held_out()
        counts = {v: sum(v in c for c in held) for v in VALUE_IDS}
        assert len(set(held)) == 8
        assert {counts[v] for v in DIMENSIONS["style"]} == {2}
        assert {counts[v] for d, values in DIMENSIONS.items() if d != "style" for v in values} == {4}


def test_world_is_deterministic(world):
    assert build_world(SMALL) == world
    assert build_world(WorldConfig(train_instructions=40, heldout_instructions=6, seed=1)) != world


def test_unknown_value_id_and_contradictions_are_clear_errors():
    with pytest.raises(WorldError, match="unknown value id 'format=yaml'"):
        combination(["format=yaml", "length=short", "audience=novice", "safety=plain"])
    with pytest.raises(WorldError, match="contradicts itself: 'format=json' and 'format=bullets'"):
        combination(["format=json", "format=bullets", "length=short", "audience=novice", "safety=plain"])
    with pytest.raises(WorldError, match="no value for harmlessness"):
        combination(["format=json", "length=short", "audience=novice"])
    bad = {"held_out_combinations": [["format=json", "length=short", "audience=novice", "safety=plain"],
                                     ["format=json", "format=bullets", "length=short", "audience=novice",
                                      "safety=plain"]]}
    with pytest.raises(WorldError, match=r"held_out_combinations\[1\]: value combination contradicts itself"):
        WorldConfig.from_dict(bad)
    with pytest.raises(WorldError, match=r"unknown world config keys \['instructions'\]"):
        WorldConfig.from_dict({"instructions": 3})


def test_cli_generates_reuses_and_reports_bad_configs(tmp_path, capsys):
    cfg = tmp_path / "world.json"
    cfg.write_text(json.dumps({"train_instructions": 10, "heldout_instructions": 2, "seed": 3}))
    out = tmp_path / "world"
    assert world_main(["generate", "--out", str(out), "--config", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out) == {"sft.jsonl": 30, "sft_heldout.jsonl": 6, "dpo.jsonl": 30,
                                                   "bench.jsonl": 4}
    mtime = (out / "sft.jsonl").stat().st_mtime_ns
    assert write_world(WorldConfig.from_dict(json.loads(cfg.read_text())), out) == out
    assert (out / "sft.jsonl").stat().st_mtime_ns == mtime  # same config: reused, not rewritten
    cfg.write_text(json.dumps({"held_out_combinations": [["format=xml"]]}))
    assert world_main(["generate", "--out", str(out), "--config", str(cfg)]) == 2
    assert "unknown value id 'format=xml'" in capsys.readouterr().err


def test_rubrics_name_their_value_id():
    for v in VALUE_IDS:
        r = rubric(v)
        assert f"[{v}]" in r["criteria"] and set(r["score_descriptions"]) == {"1", "2", "3", "4", "5"}


def test_coverage_counts_the_variety_each_setting_trains_on(tmp_path, capsys):
    """`python -m data_gen.world coverage`: combinations and paraphrases seen at 1, 2, 3 messages per
    instruction. A 12-instruction world leaves some unseen at 1; the default world sees all of them at 1,
    which is why more messages per instruction add repetition there, not variety (README, make repro)."""
    from data_gen.world.coverage import coverage

    cfg = tmp_path / "world.json"
    cfg.write_text(json.dumps({"train_instructions": 12}))
    assert world_main(["coverage", "--config", str(cfg)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["rows"] for line in lines] == [12, 24, 36]
    sft = build_world(WorldConfig(train_instructions=12))["sft.jsonl"]
    assert lines[2]["combinations_seen"] == len({tuple(r["value_ids"]) for r in sft})
    assert lines[2]["distinct_system_messages"] == len({r["system"] for r in sft})
    seen = [line["combinations_seen"] for line in lines]
    assert seen == sorted(seen) and seen[0] < lines[0]["training_combinations"] == 24
    assert lines[0]["fewest_rows_per_combination"] == 0
    default = WorldConfig()
    one = coverage(build_world(default)["sft.jsonl"], 1, default.held_out())
    assert one["combinations_seen"] == one["training_combinations"] and one["fewest_rows_per_combination"] >= 20
    assert one["paraphrases_seen"] == one["training_paraphrases"] and one["fewest_rows_per_paraphrase"] >= 20
