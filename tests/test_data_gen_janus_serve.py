"""data_gen end to end against janus-serve (a tiny random model): nonsense replies are reported, not fatal."""

from __future__ import annotations

import json
import threading

import pytest
from flax import nnx

from data_gen.cli import main
from janus_jax.model import Mistral, MistralConfig
from janus_jax.serve.build import build_server
from janus_jax.serve.loading import LoadedModel
from janus_jax.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def janus_serve_url():
    model = Mistral(MistralConfig.tiny(max_position_embeddings=2048), rngs=nnx.Rngs(0))
    loaded = LoadedModel(model=model, tokenizer=load_tokenizer(), name="janus-tiny")
    server = build_server(loaded, port=0, max_tokens=64, max_n=1, max_batch=8)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url + "/v1"
    server.shutdown()
    server.engine.close()
    server.server_close()


def test_pipeline_reports_a_tiny_models_nonsense_cleanly(tmp_path, janus_serve_url):
    src = tmp_path / "instructions.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": p}) + "\n"
            for i, p in enumerate(["Name three primary colors.", "How do magnets work?"])
        )
    )
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--instructions",
            str(src),
            "--out",
            str(out),
            "--model",
            "janus-tiny",
            "--base-url",
            janus_serve_url,
            "--max-tokens",
            "8",
            "--max-reasks",
            "1",
            "--max-retries",
            "1",
            "--timeout-s",
            "120",
            "--max-concurrency",
            "4",
            "--no-progress",
        ]
    )
    assert code == 1  # nothing usable was produced: an honest failure exit, the reasons below
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    # 8 random tokens are never three valid preference sets: every set fails at the first LLM stage,
    # each with a reason, and nothing unparseable becomes a row.
    assert len(failures) == 6
    assert {f["stage"] for f in failures} == {"preference_sets"}
    assert all(f["reason"].split(":")[0] in {"truncated", "invalid_reply", "empty_reply"} for f in failures)
    assert (out / "stages" / "preference_sets.jsonl").read_text() == ""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["client"]["calls"] == 4 and manifest["client"]["failed"] == 2
    assert manifest["splits"]["sft"] == {"path": None, "rows": 0, "sha256": None}
    assert not (out / "final" / "sft" / "train.parquet").exists()
