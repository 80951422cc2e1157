"""Reading rows: JSONL / JSON / Parquet / shard directories, a hub-layout dataset, and TFDS without TensorFlow."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from janus_jax.data.records import detect_format, validate
from janus_jax.data.report import INVALID_JSON, DataReport
from janus_jax.data.sources import REPO_ROOT, load_rows

SAMPLES = REPO_ROOT / "data" / "samples"


def sample_rows(name: str, n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (SAMPLES / name).read_text().splitlines()]
    return rows[:n] if n else rows


def read(source, split="train"):
    report = DataReport()
    return load_rows(str(source), split, report, "train"), report


def test_jsonl_json_parquet_give_the_same_rows(tmp_path):
    rows = sample_rows("sft.jsonl", 12)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for source in (SAMPLES / "sft.jsonl", tmp_path / "a.json", tmp_path / "a.parquet"):
        got, report = read(source)
        assert got[:12] == rows and not report.issues, source


def test_relative_sample_path_works_from_any_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    got, _ = read("data/samples/rm.jsonl")
    assert got == sample_rows("rm.jsonl")


def test_shard_directory_keeps_row_order(tmp_path):
    rows = sample_rows("dpo.jsonl", 9)
    for i in range(3):
        with (tmp_path / f"part-{i:02d}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[3 * i : 3 * i + 3])
    got, _ = read(tmp_path)
    assert got == rows


def test_invalid_json_line_is_reported_with_its_row_and_line(tmp_path):
    rows = sample_rows("sft.jsonl", 3)
    lines = [json.dumps(rows[0]), "", "{not json", json.dumps(rows[1]), json.dumps(rows[2])]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    got, report = read(tmp_path / "bad.jsonl")
    assert len(got) == 4 and got[1] is None
    assert [(i.row, i.kind) for i in report.issues] == [(1, INVALID_JSON)]
    assert "line 3" in report.issues[0].detail
    assert [e.row for e in validate(got, "sft", report, "train")] == [0, 2, 3]


def test_hub_loader_on_a_local_dataset_repository(tmp_path):
    """`datasets.load_dataset(name, split=...)` is the hub path; a local repo in hub layout exercises it offline."""
    rows = sample_rows("sft.jsonl", 10)
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:4]), tmp_path / "data" / "test-00000-of-00001.parquet")
    got, _ = read(tmp_path, split="test")
    assert got == rows[:4]
    assert detect_format(got) == "sft"


def test_unknown_file_type_and_empty_source():
    with pytest.raises(ValueError, match="unsupported file type '.py'"):
        read(SAMPLES / "make_samples.py")
    with pytest.raises(ValueError, match="data.source is empty"):
        read("")


@pytest.mark.parametrize("fmt", ["sft", "dpo", "rm"])
def test_tfds_build_and_read_without_tensorflow(tmp_path, fmt):
    from janus_jax.data.tfds_builder import build

    rows = sample_rows(f"{fmt}.jsonl", 15)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = build({"train": str(src), "test": str(src)}, tmp_path / "tfds", fmt)
    assert (prepared / "dataset_info.json").exists()
    got, report = read(prepared)
    assert got == rows and not report.issues  # same rows, same order, same nested records


def test_tfds_builder_names_a_malformed_row(tmp_path):
    from janus_jax.data.tfds_builder import build

    rows = sample_rows("sft.jsonl", 3)
    rows[2]["output"] = 7
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"row 2: field 'output' must be a string \(int\)"):
        build({"train": str(src)}, tmp_path / "tfds", "sft")
