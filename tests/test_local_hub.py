"""The local hub (janus_jax.local_hub): hub ids resolve offline through the code paths users take online."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh process: huggingface_hub and datasets read their cache variables when imported.
PROBE = """
import json
from eval.benches.multifaceted import load_multifaceted
from janus_jax.data.report import DataReport
from janus_jax.data.sources import load_rows
from janus_jax.load import config_of, load_model

model = load_model("mistral-community/Mistral-7B-v0.2")
rows = {name: load_rows(name, "train", DataReport(), "train") for name in (
    "kaist-ai/Multifaceted-Collection", "kaist-ai/Multifaceted-Collection-small",
    "kaist-ai/Multifaceted-Collection-DPO", "kaist-ai/Multifaceted-Collection-ORPO",
    "kaist-ai/Multifaceted-Collection-RM")}
bench = load_multifaceted(None)
print(json.dumps({
    "params": config_of(model).num_params, "hidden": config_of(model).hidden_size,
    "param_dtype": config_of(model).param_dtype,
    "rows": {name: len(r) for name, r in rows.items()},
    "columns": {name: sorted(r[0]) for name, r in rows.items()},
    "bench_items": len(bench.items), "bench_bad": len(bench.bad_rows),
}))
"""


def probe(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_hub_ids_resolve_offline_for_the_model_the_datasets_and_the_bench(local_hub):
    done = probe(local_hub)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["hidden"] == 64 and got["params"] > 0  # MistralConfig.tiny()
    assert got["param_dtype"] == "float32"  # load_model's default for an HF directory
    assert got["rows"] == {
        "kaist-ai/Multifaceted-Collection": 180,
        "kaist-ai/Multifaceted-Collection-small": 60,  # one system message per instruction
        "kaist-ai/Multifaceted-Collection-DPO": 180,
        "kaist-ai/Multifaceted-Collection-ORPO": 180,
        "kaist-ai/Multifaceted-Collection-RM": 180,
    }
    sft = ["main_source", "original_source", "output", "preference_set", "prompt", "system"]
    assert got["columns"]["kaist-ai/Multifaceted-Collection"] == sorted(sft)
    assert got["columns"]["kaist-ai/Multifaceted-Collection-DPO"] == sorted(
        ["main_source", "original_source", "system", "prompt", "chosen", "rejected"])
    assert got["columns"]["kaist-ai/Multifaceted-Collection-RM"] == ["chosen", "input", "rejected"]
    assert got["bench_items"] == 12 and got["bench_bad"] == 0


def test_without_the_local_hub_the_same_ids_fail_offline(local_hub, tmp_path):
    """The probe passes only because of the local hub: empty caches, same ids, an error naming the model."""
    empty = {**local_hub, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    done = probe(empty)
    assert done.returncode != 0
    assert "Mistral-7B-v0.2" in done.stderr
