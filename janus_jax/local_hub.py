"""A Hugging Face cache on disk, so the hub ids the recipes name resolve offline.

    python -m janus_jax.local_hub DIR
    export HF_HUB_CACHE=DIR/hub HF_DATASETS_CACHE=DIR/datasets HF_HUB_OFFLINE=1

writes `DIR/hub` in the hub cache's own layout (`models--ORG--NAME/refs/main` -> `snapshots/REV/...`):
- `mistral-community/Mistral-7B-v0.2`: a tiny random Mistral (config.json, safetensors, the Mistral v1
  tokenizer files) with the architecture of `MistralConfig.tiny()`, so the paper's recipes start from the
  hub id with `--config.model.preset=tiny`;
- `kaist-ai/Multifaceted-Collection`, `-small` (one system message per instruction), `-DPO`, `-ORPO`, `-RM`:
  the bundled samples (data/samples/) as Parquet in the released schemas; `kaist-ai/Multifaceted-Bench`:
  bench rows in the released schema;

and `DIR/datasets`, what `datasets.load_dataset(ID)` leaves in `HF_DATASETS_CACHE` after a first online
load: offline, `datasets` reads only that cache (the Arrow copy), never the hub cache. It is prepared by
`datasets`' own Parquet builder from the hub snapshot, as an online load would.

Code then takes the path it takes online (`huggingface_hub.snapshot_download`, `datasets.load_dataset`),
which is what tests and offline users need: the same code, no network. `DIR` is `HF_HOME`-shaped, so
`HF_HOME=DIR` instead of the two cache variables works as well.
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


def _prepare_dataset(datasets_cache: Path, repo_id: str, snapshot: Path) -> Path:
    """Prepare `snapshot`'s Parquet files as `datasets` caches `repo_id` (`ORG___NAME/default/0.0.0/REV`).

    The builder names its folder after the dataset only; the hub path adds the namespace, so the prepared
    folder is moved under `ORG___NAME`, where `datasets.load_dataset(repo_id)` looks for it offline.
    """
    import shutil

    from datasets import disable_progress_bars
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    folder = camelcase_to_snakecase(name)
    staging = datasets_cache / ".building"
    files = sorted(str(p) for p in (snapshot / "data").glob("*.parquet"))
    builder = Parquet(cache_dir=str(staging), dataset_name=name, hash=snapshot.name, config_id="default",
                      data_files={"train": files})
    disable_progress_bars()
    builder.download_and_prepare()
    target = datasets_cache / f"{namespace}___{folder}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(staging / folder, target)
    shutil.rmtree(staging)
    for lock in target.rglob("*.lock"):
        lock.unlink()
    return target


def environment(home: str | Path) -> dict[str, str]:
    """The variables that point Hugging Face libraries at the local hub in `home`, offline."""
    home = Path(home).absolute()
    return {
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }


def build(home: str | Path) -> Path:
    """Write the local hub into `home` (`home/hub` and `home/datasets`, see the module docstring)."""
    import tempfile

    home = Path(home)
    hub, datasets_cache = home / "hub", home / "datasets"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_model(Path(tmp) / "model")
        _snapshot(hub, "model", BASE_MODEL, {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()})
    tables = {repo_id: read_jsonl(SAMPLES / sample) for repo_id, sample in DATASETS.items()}
    # -small keeps one system message per instruction, as the released one does.
    tables["kaist-ai/Multifaceted-Collection-small"] = list(
        {row["prompt"]: row for row in reversed(tables["kaist-ai/Multifaceted-Collection-small"])}.values())[::-1]
    tables[BENCH] = bench_rows()
    for repo_id, rows in tables.items():
        snapshot = _snapshot(hub, "dataset", repo_id, {"data/train-00000-of-00001.parquet": _parquet_bytes(rows)})
        _prepare_dataset(datasets_cache, repo_id, snapshot)
    return home


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m janus_jax.local_hub", description=__doc__.splitlines()[0])
    parser.add_argument("home", help="directory to write (an HF_HOME: hub/ and datasets/ inside)")
    args = parser.parse_args(argv)
    home = build(args.home)
    exports = " ".join(f"{k}={v}" for k, v in environment(home).items())
    print(f"wrote a local hub to {home.absolute()}\nuse it with: export {exports}")


if __name__ == "__main__":
    main()
