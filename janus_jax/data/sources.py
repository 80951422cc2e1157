"""Raw rows from wherever a dataset lives: the Hugging Face hub, local JSONL / JSON / Parquet, or TFDS.

One rule picks the reader, so a path means the same thing everywhere:
  * an existing file: by extension (`.jsonl`, `.json`, `.parquet`);
  * an existing directory with `dataset_info.json`: a prepared TFDS dataset (see `tfds_builder.py`);
  * an existing directory of `.jsonl` / `.parquet` shards: the shards, in sorted name order;
  * any other directory (e.g. a downloaded hub dataset repository) and anything else: a Hugging Face dataset,
    `datasets.load_dataset(source, split=split)`.
A `gs://` URL of a file or folder follows the same rules (read through `janus_jax.paths`); one that does not
exist is an error, never a hub name.
Relative paths that do not exist from the working directory are also tried from the repository root, so the
bundled `data/samples/...` work from anywhere in a source checkout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from etils import epath

from janus_jax.data.report import INVALID_JSON, DataReport
from janus_jax.jsonio import read_parquet
from janus_jax.paths import is_url, to_path

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def resolve_path(source: str) -> epath.Path | Path | None:
    """The local path or gs:// URL `source` names, or None when it names a hub dataset."""
    if not source:
        return None
    if is_url(source):
        url = to_path(source)
        if not url.exists():
            raise FileNotFoundError(f"data source {source} does not exist")
        return url
    p = Path(source).expanduser()
    if p.exists():
        return p
    if not p.is_absolute() and (REPO_ROOT / p).exists():
        return REPO_ROOT / p
    return None


def load_rows(source: str, split: str, report: DataReport, report_split: str) -> list[dict]:
    """All rows of `source` as dicts; unreadable rows are reported (with their index) and skipped.

    Row indices in the report count data rows, so `row 3` of a JSONL file is its fourth non-blank line.
    """
    if not source:
        raise ValueError("data.source is empty: set it to a hub dataset name or a local file/directory")
    path = resolve_path(source)
    if path is None:
        return _load_hub(source, split)
    if path.is_file():
        return _load_file(path, report, report_split)
    if (path / "dataset_info.json").exists():
        return _load_tfds(path, split)
    shards = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet"))
    if not shards:
        return _load_hub(str(path), split)  # a local copy of a hub dataset repository
    rows: list[dict] = []
    for shard in shards:
        rows.extend(_load_file(shard, report, report_split, first_row=len(rows)))
    return rows


def _load_file(path: epath.Path | Path, report: DataReport, report_split: str, first_row: int = 0) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, report, report_split, first_row)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json dataset must hold a list of row objects, got {type(data).__name__}")
        return data
    if suffix == ".parquet":
        return read_parquet(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


def _read_jsonl(path: epath.Path | Path, report: DataReport, report_split: str, first_row: int) -> list[dict]:
    rows: list[dict] = []
    row = first_row
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            report.locations[(report_split, row)] = f"{path.name} line {line_no}"
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                report.add(report_split, row, INVALID_JSON, f"{path.name} line {line_no}: {e.msg}")
                rows.append(None)  # keeps row indices aligned with data lines; the validator skips it
            row += 1
    return rows


def _load_hub(name: str, split: str) -> list[dict]:
    import datasets

    ds = datasets.load_dataset(name, split=split)
    return ds.to_list()


def _load_tfds(path: epath.Path | Path, split: str) -> list[dict]:
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(path))
    source = builder.as_data_source(split=split)
    rows = []
    for i in range(len(source)):
        row = _from_tfds(source[i])
        # Every nested field of the collection's schemas is a list of records (preference_set, chosen, ...).
        rows.append({k: sequence_of_dicts(v) if isinstance(v, dict) else v for k, v in row.items()})
    return rows


def _from_tfds(value):
    """TFDS returns bytes for text and a dict of lists for a sequence of dicts; undo both."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _from_tfds(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_from_tfds(v) for v in value]
    if hasattr(value, "tolist"):
        return _from_tfds(value.tolist())
    return value


def sequence_of_dicts(value: dict[str, list] | Iterable[dict]) -> list[dict]:
    """A TFDS Sequence({...}) comes back as {key: [values]}; turn it into [{key: value}, ...]."""
    if isinstance(value, dict):
        keys = list(value)
        n = len(value[keys[0]]) if keys else 0
        return [{k: value[k][i] for k in keys} for i in range(n)]
    return list(value)
