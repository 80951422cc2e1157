"""Batches: exact packing and loss masks, order as a pure function of (seed, step), sharding, length policy."""

import json
import random
from collections import Counter

import numpy as np
import pytest

from janus_jax.data import build_data, default_data_config
from janus_jax.data.report import OVER_LENGTH_DROPPED, OVER_LENGTH_TRUNCATED
from janus_jax.data.sources import REPO_ROOT
from janus_jax.prompts import render_sft_example
from janus_jax.tokenizer import load_tokenizer

SAMPLES = REPO_ROOT / "data" / "samples"
SFT_ROWS = [json.loads(line) for line in (SAMPLES / "sft.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def config(source=SAMPLES / "sft.jsonl", **overrides):
    c = default_data_config()
    c.source = str(source)
    c.seq_len = 128
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def build(tok, cfg, gb=4, epochs=1, p=0, n=1, expect=None):
    return build_data(
        cfg, global_batch_size=gb, num_epochs=epochs, process_index=p, process_count=n, tokenizer=tok, expect=expect
    )


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def documents(batch, prefix=""):
    """Split packed rows back into documents: (full ids, loss weights over targets)."""
    docs = []
    seg, inp, tgt, w, pos = (
        batch[prefix + k] for k in ("segment_ids", "input_ids", "targets", "loss_weights", "positions")
    )
    for b in range(seg.shape[0]):
        for s in sorted(set(seg[b].tolist()) - {0}):
            idx = np.flatnonzero(seg[b] == s)
            assert np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)), "a document must be contiguous"
            assert np.array_equal(pos[b, idx], np.arange(len(idx))), "positions restart at 0 per document"
            assert np.array_equal(tgt[b, idx[:-1]], inp[b, idx[1:]]), "targets are the next input token"
            docs.append(([*inp[b, idx].tolist(), int(tgt[b, idx[-1]])], w[b, idx].tolist()))
        pads = seg[b] == 0
        assert not w[b, pads].any()
        if pads.any():
            assert pads[np.argmax(pads) :].all(), "padding only at the end of a row"
    return docs


def test_packed_batches_are_exact(tok):
    bundle = build(tok, config(seq_len=256))
    pipe = bundle.train
    expected = {}
    for r in SFT_ROWS:
        ids, mask = render_sft_example(tok, r["system"], r["prompt"], r["output"])
        expected[tuple(ids)] = (mask, r["output"])
    seen = Counter()
    for step in range(pipe.total_steps):
        batch = pipe.batch(step)
        assert set(batch) == {"input_ids", "targets", "loss_weights", "positions", "segment_ids"}
        for k, v in batch.items():
            assert v.shape == (4, 256) and v.dtype == (np.float32 if k == "loss_weights" else np.int32)
        for ids, weights in documents(batch):
            mask, output = expected[tuple(ids)]
            assert weights == mask[1:]
            trained = [t for t, m in zip(ids[1:], weights, strict=True) if m]
            assert trained[-1] == tok.eos_id and tok.decode(trained[:-1]) == output
            seen[tuple(ids)] += 1
    # Every example exactly once per epoch; packing actually packs.
    assert sum(seen.values()) == len(SFT_ROWS) == bundle.report.examples["train"]
    assert set(seen.values()) == {1}
    assert pipe.packing_efficiency > 0.8
    assert pipe.total_steps == sum(pipe.epoch_steps) and pipe.steps_per_epoch == pipe.epoch_steps[0]
    with pytest.raises(IndexError, match="outside"):
        pipe.batch(pipe.total_steps)


def test_order_is_a_pure_function_of_seed_and_step(tok):
    a = build(tok, config(), epochs=3).train
    b = build(tok, config(), epochs=3).train
    late = a.total_steps - 1
    first_late = a.batch(late)  # any step can be built first: resuming needs only the step number
    for step in (0, 3, late):
        assert all(np.array_equal(a.batch(step)[k], b.batch(step)[k]) for k in a.batch(step))
    assert all(np.array_equal(first_late[k], b.batch(late)[k]) for k in first_late)
    e0, e1 = a.epoch_steps[0], a.epoch_steps[0] + a.epoch_steps[1]
    assert a.locate(e0) == (1, 0) and a.locate(e1 - 1) == (1, a.epoch_steps[1] - 1)
    assert not np.array_equal(a.batch(0)["input_ids"], a.batch(e0)["input_ids"]), "each epoch reshuffles"
    c = build(tok, config(seed=1), epochs=1).train
    assert not np.array_equal(a.batch(0)["input_ids"], c.batch(0)["input_ids"])


def test_processes_get_contiguous_slices_of_the_global_batch(tok):
    whole = build(tok, config(), gb=8).train
    parts = [build(tok, config(), gb=8, p=p, n=4).train for p in range(4)]
    assert all(p.total_steps == whole.total_steps and p.local_batch_size == 2 for p in parts)
    for step in (0, whole.total_steps - 1):
        full = whole.batch(step)
        for k in full:
            assert np.array_equal(np.concatenate([p.batch(step)[k] for p in parts]), full[k])
    with pytest.raises(ValueError, match="not divisible by the process count 3"):
        build(tok, config(), gb=8, p=0, n=3)


def test_unpacked_rows_hold_one_example_each(tok):
    pipe = build(tok, config(packing=False), gb=16).train
    assert pipe.total_steps == -(-len(SFT_ROWS) // 16)
    last = pipe.batch(pipe.total_steps - 1)
    n_real = len(SFT_ROWS) - 16 * (pipe.total_steps - 1)
    assert (last["segment_ids"].max(axis=1) == 1).sum() == n_real  # the rest are all-padding fillers
    assert not last["loss_weights"][n_real:].any()
    docs = documents(pipe.batch(0))
    assert len(docs) == 16
    assert all(last["segment_ids"][b, 0] == 1 for b in range(n_real))


def test_over_length_truncate_and_drop(tok, tmp_path):
    long_output = " ".join(f"word{i}" for i in range(200))
    rows = [
        dict(SFT_ROWS[0], system="Be brief.", output="Red."),
        dict(SFT_ROWS[1], output=long_output),
        dict(SFT_ROWS[2], prompt="Why? " * 200),
    ]
    src = write_jsonl(tmp_path / "long.jsonl", rows)

    truncated = build(tok, config(src, seq_len=64, packing=False))
    assert truncated.report.counts == {OVER_LENGTH_DROPPED: 1, OVER_LENGTH_TRUNCATED: 1}
    assert [i.row for i in truncated.report.issues] == [1, 2]
    assert truncated.report.examples["train"] == 2
    docs = {len(ids): (ids, w) for ids, w in documents(truncated.train.batch(0))}
    ids, weights = docs[65]  # 64 positions: the row is full
    assert tok.eos_id not in ids[1:], "a cut response does not end with EOS"
    trained = [t for t, m in zip(ids[1:], weights, strict=True) if m]
    assert long_output.startswith(tok.decode(trained)) and len(trained) > 10

    dropped = build(tok, config(src, seq_len=64, packing=False, over_length="drop"))
    assert dropped.report.counts == {OVER_LENGTH_DROPPED: 2}
    assert dropped.report.examples["train"] == 1
    assert "over-length policy: drop" in dropped.report.summary()


def test_empty_dataset_is_an_error_naming_the_problem(tok, tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"system": "s", "prompt": "p"}, {"system": "s", "prompt": "q"}])
    with pytest.raises(ValueError, match=r"no usable training examples .*2 rows read.*row 0: missing_field"):
        build(tok, config(src, format="sft"))


def test_system_messages_per_instruction(tok, tmp_path):
    prompts = {r["prompt"] for r in SFT_ROWS}
    for k in (1, 2, 3):
        b = build(tok, config(system_messages_per_instruction=k))
        assert b.report.examples["train"] == k * len(prompts)
        assert b.report.not_selected == (3 - k) * len(prompts)
    # The choice depends on the rows, not on their order in the file.
    shuffled = SFT_ROWS[:]
    random.Random(0).shuffle(shuffled)
    src = write_jsonl(tmp_path / "shuffled.jsonl", shuffled)
    kept = []
    for source, rows in ((SAMPLES / "sft.jsonl", SFT_ROWS), (src, shuffled)):
        store = build(tok, config(source, system_messages_per_instruction=1)).train.store
        kept.append({rows[i]["system"] + rows[i]["prompt"] for i in store.rows.tolist()})
    assert kept[0] == kept[1]
    with pytest.raises(ValueError, match="must be 1, 2 or 3"):
        build(tok, config(system_messages_per_instruction=4))


def test_eval_split_holds_out_whole_instructions(tok, tmp_path):
    b = build(tok, config(eval_fraction=0.1))
    train_prompts = {SFT_ROWS[i]["prompt"] for i in b.train.store.rows.tolist()}
    eval_prompts = {SFT_ROWS[i]["prompt"] for i in b.eval.store.rows.tolist()}
    assert len(eval_prompts) == 6 and not train_prompts & eval_prompts
    assert b.report.examples == {"train": 162, "eval": 18}
    assert b.eval.total_steps == b.eval.steps_per_epoch  # one ordered pass
    assert build(tok, config()).eval is None

    src = write_jsonl(tmp_path / "eval.jsonl", SFT_ROWS[:5])
    b = build(tok, config(eval_source=str(src)))
    assert b.report.examples == {"train": 180, "eval": 5} and b.report.rows_read == {"train": 180, "eval": 5}
    with pytest.raises(ValueError, match="not both"):
        build(tok, config(eval_source=str(src), eval_fraction=0.1))


@pytest.mark.parametrize("name", ["dpo", "rm"])
def test_preference_batches(tok, name):
    rows = [json.loads(line) for line in (SAMPLES / f"{name}.jsonl").read_text().splitlines()]
    cfg = config(SAMPLES / f"{name}.jsonl", packing=False)
    whole = build(tok, cfg, gb=8, expect="pairs")
    assert whole.format == name and whole.report.examples["train"] == len(rows)
    pipe = whole.train
    batch = pipe.batch(0)
    for b in range(8):
        row = rows[int(batch["pair_ids"][b])]
        chosen = row["chosen"][-1]["content"] if name == "dpo" else row["chosen"]
        rejected = row["rejected"][-1]["content"] if name == "dpo" else row["rejected"]
        n_prompt = int(batch["prompt_lengths"][b])
        for side, text in (("chosen", chosen), ("rejected", rejected)):
            length = int(batch[f"{side}_lengths"][b])
            seg = batch[f"{side}_segment_ids"][b]
            assert seg[:length].all() and not seg[length:].any()
            w = batch[f"{side}_loss_weights"][b]
            assert np.array_equal(np.flatnonzero(w), np.arange(n_prompt - 1, length))
            trained = batch[f"{side}_targets"][b][w > 0].tolist()
            assert trained[-1] == tok.eos_id and tok.decode(trained[:-1]) == text
        assert np.array_equal(batch["chosen_input_ids"][b, :n_prompt], batch["rejected_input_ids"][b, :n_prompt])
    last = pipe.batch(pipe.total_steps - 1)
    n_real = len(rows) - 8 * (pipe.total_steps - 1)
    assert last["pair_weights"].tolist() == [1.0] * n_real + [0.0] * (8 - n_real)
    assert (last["chosen_lengths"] > 0).all(), "filler rows are valid sequences"
    halves = [build(tok, cfg, gb=8, p=p, n=2).train.batch(3) for p in range(2)]
    for k, v in pipe.batch(3).items():
        assert np.array_equal(np.concatenate([h[k] for h in halves]), v)


def test_objective_and_format_must_match(tok):
    with pytest.raises(ValueError, match="needs pairs data"):
        build(tok, config(), expect="pairs")
    with pytest.raises(ValueError, match="packing applies to SFT data only"):
        build(tok, config(SAMPLES / "dpo.jsonl"))


def test_check_data_command(capsys):
    from janus_jax.data.__main__ import main

    main([str(SAMPLES / "rm.jsonl"), "--seq_len", "128"])
    out = capsys.readouterr().out
    assert '"format": "rm"' in out and "--- first chosen ---" in out
    assert "[/INST]⟦" in out and "</s>⟧" in out


def test_hold_out_is_drawn_before_subsampling_so_every_k_and_policy_shares_it(tok):
    held = []
    for overrides in ({"system_messages_per_instruction": k} for k in (1, 2, 3)):
        b = build(tok, config(eval_fraction=0.2, **overrides))
        held.append(sorted(b.eval.store.rows.tolist()))
    b = build(tok, config(eval_fraction=0.2, system_messages_per_instruction=1, system_message_policy="generic"))
    held.append(sorted(b.eval.store.rows.tolist()))
    assert all(h == held[0] for h in held)
    eval_prompts = {SFT_ROWS[i]["prompt"] for i in held[0]}
    # Held-out instructions keep all their system messages, whatever k the training rows use.
    assert len(held[0]) == sum(r["prompt"] in eval_prompts for r in SFT_ROWS)


def test_system_message_policy_changes_training_rows_only(tok):
    from janus_jax.data.pipeline import apply_system_message_policy
    from janus_jax.data.records import validate
    from janus_jax.data.report import DataReport

    records = validate(SFT_ROWS, "sft", DataReport(), "train")
    generic = apply_system_message_policy(records, "generic", "You are a helpful assistant.")
    assert {r.system for r in generic} == {"You are a helpful assistant."}
    assert [r.response for r in generic] == [r.response for r in records]
    none = apply_system_message_policy(records, "none", "")
    assert [r.prompt_text for r in none] == [f"[INST] {r.prompt.strip()} [/INST]" for r in records]
    b = build(tok, config(eval_fraction=0.2, system_message_policy="generic"))
    eval_systems = {SFT_ROWS[i]["system"] for i in b.eval.store.rows.tolist()}
    assert len(eval_systems) > 1  # held-out rows keep their own system messages
    pairs = validate([json.loads(line) for line in (SAMPLES / "dpo.jsonl").read_text().splitlines()], "dpo",
                     DataReport(), "train")
    none_pairs = apply_system_message_policy(pairs, "none", "")
    assert none_pairs and all(p.prompt_text == f"[INST] {p.prompt.strip()} [/INST]" for p in none_pairs)


def test_bad_system_message_policies_are_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="system_message_policy must be one of"):
        build(tok, config(system_message_policy="random"))
    with pytest.raises(ValueError, match="needs a non-empty data.generic_system_message"):
        build(tok, config(system_message_policy="generic", generic_system_message=" "))
    rm = write_jsonl(tmp_path / "rm.jsonl", [{"input": "s\np", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ValueError, match="row 0: RM-schema rows .* cannot be replaced"):
        build(tok, config(rm, packing=False, system_message_policy="none"))
