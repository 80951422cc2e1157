"""A Hugging Face hub cache on disk, so the hub ids the recipes name resolve offline.

    python -m janus_jax.local_hub DIR        # then: export HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1

writes, in the hub cache's own layout (`models--ORG--NAME/refs/main` -> `snapshots/REV/...`):
- `mistral-community/Mistral-7B-v0.2`: a tiny random Mistral (config.json, safetensors, the Mistral v1
  tokenizer files) with the architecture of `MistralConfig.tiny()`, so the paper's recipes start from the
  hub id with `--config.model.preset=tiny`;
- `kaist-ai/Multifaceted-Collection`, `-small`, `-DPO`, `-ORPO`, `-RM`: the bundled samples
  (data/samples/) as Parquet in the released schemas; `kaist-ai/Multifaceted-Bench`: bench rows in the
  released schema.

Code then takes the path it takes online (`huggingface_hub.snapshot_download`, `datasets.load_dataset`),
which is what tests and offline users need: the same code, no network.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from janus_jax.jsonio import read_jsonl

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
BASE_MODEL = "mistral-community/Mistral-7B-v0.2"
DATASETS = {
    "kaist-ai/Multifaceted-Collection": "sft.jsonl",
    "kaist-ai/Multifaceted-Collection-small": "sft.jsonl",
    "kaist-ai/Multifaceted-Collection-DPO": "dpo.jsonl",
    "kaist-ai/Multifaceted-Collection-ORPO": "dpo.jsonl",
    "kaist-ai/Multifaceted-Collection-RM": "rm.jsonl",
}
BENCH = "kaist-ai/Multifaceted-Bench"


def _snapshot(cache: Path, kind: str, repo_id: str, files: dict[str, bytes]) -> Path:
    """Write `files` as the `main` revision of `repo_id` (kind: "model" or "dataset")."""
    revision = hashlib.sha1(b"".join(sorted(files.values()))).hexdigest()
    root = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    for name, data in files.items():
        path = snapshot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snapshot


def _parquet_bytes(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def bench_rows(n: int = 12) -> list[dict]:
    """Multifaceted-Bench rows (the released schema) built from the SFT samples' preference sets."""
    rows = []
    for row in read_jsonl(SAMPLES / "sft.jsonl")[: 3 * n : 3]:
        rubrics = [
            {
                "criteria": f"Does the response follow the {p['dimension']} preference: {p['description']}",
                "score_descriptions": {str(k): f"Level {k} of following the preference." for k in range(1, 6)},
            }
            for p in row["preference_set"]
        ]
        rows.append(
            {
                "source": row["original_source"],
                "preference_set": row["preference_set"],
                "system": row["system"],
                "prompt": row["prompt"],
                "reference_answer": row["output"],
                "rubrics": rubrics,
            }
        )
    return rows


def write_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A random `MistralConfig.tiny()` model saved as an HF directory with the Mistral v1 tokenizer files."""
    from flax import nnx

    from janus_jax.hf_io import save_pretrained
    from janus_jax.model import Mistral, MistralConfig
    from janus_jax.train.export import write_tokenizer_files

    model = Mistral(MistralConfig.tiny(), rngs=nnx.Rngs(seed))
    save_pretrained(model, directory, dtype="float32")
    write_tokenizer_files(Path(directory))
    return Path(directory)


def build(cache: str | Path) -> Path:
    """Write the local hub into `cache` (a `HF_HUB_CACHE` directory); returns it."""
    import tempfile

    cache = Path(cache)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_model(Path(tmp) / "model")
        _snapshot(cache, "model", BASE_MODEL, {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()})
    for repo_id, sample in DATASETS.items():
        rows = read_jsonl(SAMPLES / sample)
        _snapshot(cache, "dataset", repo_id, {"data/train-00000-of-00001.parquet": _parquet_bytes(rows)})
    _snapshot(cache, "dataset", BENCH, {"data/train-00000-of-00001.parquet": _parquet_bytes(bench_rows())})
    return cache


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m janus_jax.local_hub", description=__doc__.splitlines()[0])
    parser.add_argument("cache", help="directory to write (use it as HF_HUB_CACHE)")
    args = parser.parse_args(argv)
    path = build(args.cache).absolute()
    print(f"wrote a local hub to {path}\nuse it with: export HF_HUB_CACHE={path} HF_HUB_OFFLINE=1")


if __name__ == "__main__":
    main()
