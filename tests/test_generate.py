"""janus-generate end to end: a tiny HF checkpoint on disk, one reply, and a resumable JSONL batch."""

import json

import pytest
from flax import nnx

import janus_jax
from janus_jax.cli.generate import main
from janus_jax.model import Mistral, MistralConfig


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_hf")
    janus_jax.save_pretrained(Mistral(MistralConfig.tiny(), rngs=nnx.Rngs(3)), path, dtype="float32")
    return path


def test_one_reply_is_printed(hf_dir, capsys):
    args = ["--hf", str(hf_dir), "--system", "Be brief.", "--prompt", "Name a color.", "--max-new-tokens", "8"]
    assert main([*args, "--temperature", "0"]) == 0
    first = capsys.readouterr().out
    assert first.strip()
    assert main([*args, "--temperature", "0"]) == 0
    assert capsys.readouterr().out == first


def test_batch_file_resumes_after_an_interrupted_run(hf_dir, tmp_path, capsys):
    rows = [{"system": f"Persona {i}.", "prompt": f"Question {i}?", "id": i} for i in range(5)]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, '{"system": "no prompt here"}')
    lines.insert(4, "not json")
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    # One row at a time and 8 new tokens, as the single reply above: the same compiled programs.
    common = ["--hf", str(hf_dir), "--input", str(source), "--max-new-tokens", "8", "--batch-size", "1"]

    whole = tmp_path / "whole.jsonl"
    assert main([*common, "--output", str(whole)]) == 1  # the two malformed lines are reported
    err = capsys.readouterr().err
    assert "in.jsonl:3: field 'prompt'" in err and "in.jsonl:5: not valid JSON" in err
    assert "2 input row(s) not generated" in err
    written = [json.loads(line) for line in whole.read_text().splitlines()]
    assert [r["id"] for r in written] == [0, 1, 2, 3, 4]
    assert all(r["output"] and r["finish_reason"] in ("stop", "length") for r in written)

    # A run killed after two rows, in the middle of writing the third.
    resumed = tmp_path / "resumed.jsonl"
    kept = whole.read_text().splitlines(keepends=True)[:2]
    resumed.write_text("".join(kept) + kept[0][:20])
    assert main([*common, "--output", str(resumed)]) == 1
    assert resumed.read_text() == whole.read_text()


def test_bad_sampling_flags_are_refused(hf_dir, capsys):
    assert main(["--hf", str(hf_dir), "--prompt", "x", "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
