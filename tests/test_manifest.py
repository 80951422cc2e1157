"""Run manifests: contents, resume bookkeeping, and refusal of a workdir that holds another run."""

import hashlib
import json
import os
import subprocess

import ml_collections
import pytest

from janus_jax import manifest


def _config(lr=1e-4, steps=10):
    config = ml_collections.ConfigDict()
    config.optimizer = ml_collections.ConfigDict({"lr": lr, "warmup_steps": 2, "betas": (0.9, 0.95)})
    config.steps = steps
    config.data = ml_collections.ConfigDict({"path": None})
    return config


class _Mesh:
    shape = {"data": 2, "fsdp": 4, "tensor": 1}


def test_write_manifest_records_the_run(tmp_path):
    data_file = tmp_path / "train.jsonl"
    data_file.write_text('{"prompt": "hi"}\n')
    data_dir = tmp_path / "shards"
    (data_dir / "sub").mkdir(parents=True)
    (data_dir / "a.bin").write_bytes(b"abc")
    (data_dir / "sub" / "b.bin").write_bytes(b"defg")
    workdir = tmp_path / "run"

    written = manifest.write_manifest(
        workdir,
        config=_config(),
        mesh=_Mesh(),
        data_files=[data_file, data_dir, "kaist-ai/Multifaceted-Collection"],
        extra={"objective": "sft"},
    )
    on_disk = json.loads((workdir / "manifest.json").read_text())
    assert on_disk == written
    assert on_disk["status"] == "running" and on_disk["end_time"] is None
    assert on_disk["config"] == {
        "optimizer": {"lr": 1e-4, "warmup_steps": 2, "betas": [0.9, 0.95]},
        "steps": 10,
        "data": {"path": None},
    }
    assert on_disk["mesh"] == {"axis_names": ["data", "fsdp", "tensor"], "shape": {"data": 2, "fsdp": 4, "tensor": 1}}
    assert on_disk["devices"]["platform"] == "cpu" and on_disk["devices"]["device_count"] == 8
    for package in ("jax", "flax", "optax", "orbax-checkpoint"):
        assert on_disk["versions"][package], package
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert on_disk["code"]["commit"] == commit and isinstance(on_disk["code"]["dirty"], bool)
    file_record, dir_record, hub_record = on_disk["data_files"]
    assert file_record == {
        "path": str(data_file),
        "kind": "file",
        "bytes": 17,
        "mtime_ns": data_file.stat().st_mtime_ns,
        "sha256": hashlib.sha256(b'{"prompt": "hi"}\n').hexdigest(),
    }
    assert dir_record["kind"] == "directory" and dir_record["files"] == 2 and dir_record["bytes"] == 7
    assert hub_record == {"path": "kaist-ai/Multifaceted-Collection", "kind": "not_local", "sha256": None}
    assert on_disk["extra"] == {"objective": "sft"}
    assert len(on_disk["attempts"]) == 1


def test_directory_hash_changes_with_content(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    before = manifest.data_file_record(tmp_path / "d")["sha256"]
    (tmp_path / "d" / "x").write_text("2")
    assert manifest.data_file_record(tmp_path / "d")["sha256"] != before


def test_a_resume_reuses_the_hashes_of_data_that_did_not_change(tmp_path, monkeypatch):
    """Sizes, file count and newest modification time unchanged: the earlier attempt's hash is kept and no data
    is read; a changed file (same size, newer time) is hashed again."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (shards / name).write_text('{"prompt": "hi"}\n')
    single = shards / "a.jsonl"
    first = manifest.write_manifest(tmp_path / "run", config=_config(), data_files=[shards, single])

    def no_reading(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(manifest, "sha256_file", no_reading)
    again = manifest.write_manifest(tmp_path / "run", config=_config(), data_files=[shards, single])
    assert again["data_files"] == first["data_files"]

    monkeypatch.undo()
    single.write_text('{"prompt": "ho"}\n')
    stat = single.stat()
    os.utime(single, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = manifest.write_manifest(tmp_path / "run", config=_config(), data_files=[shards, single])
    assert [r["sha256"] != f["sha256"] for r, f in zip(changed["data_files"], first["data_files"])] == [True, True]


def test_finish_and_resume_keep_history(tmp_path):
    first = manifest.write_manifest(tmp_path, config=_config())
    manifest.finish_manifest(tmp_path, "interrupted", final_step=4)
    assert manifest.check_workdir(tmp_path, _config()) is True  # same config: a resume
    resumed = manifest.write_manifest(tmp_path, config=_config())
    assert resumed["start_time"] == first["start_time"]
    assert [a["status"] for a in resumed["attempts"]] == ["interrupted", "running"]
    done = manifest.finish_manifest(tmp_path, "completed", final_step=10)
    assert done["status"] == "completed" and done["end_time"] and done["final_step"] == 10
    assert json.loads((tmp_path / "manifest.json").read_text())["attempts"][-1]["status"] == "completed"


def test_check_workdir_refuses_a_different_run(tmp_path):
    assert manifest.check_workdir(tmp_path / "fresh", _config()) is False
    manifest.write_manifest(tmp_path, config=_config())
    with pytest.raises(manifest.WorkdirConflictError, match=r"optimizer\.lr: 0\.0001 -> 0\.001"):
        manifest.check_workdir(tmp_path, _config(lr=1e-3))
    with pytest.raises(manifest.WorkdirConflictError):
        manifest.write_manifest(tmp_path, config=_config(steps=11))


def test_check_workdir_refuses_outputs_without_manifest(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(manifest.WorkdirConflictError, match="metrics.jsonl"):
        manifest.check_workdir(tmp_path, _config())


def test_corrupt_manifest_is_named(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json"):
        manifest.read_manifest(tmp_path)


def test_finish_without_start_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_manifest"):
        manifest.finish_manifest(tmp_path, "completed")


def test_git_info_outside_a_repository(tmp_path):
    assert manifest.git_info(tmp_path) == {"commit": None, "dirty": None}


def test_config_values_become_json(tmp_path):
    weird = {"nan": float("nan"), "tuple": (1, (2, 3)), "obj": object}
    as_json = manifest.to_jsonable(weird)
    assert as_json["nan"] == "nan" and as_json["tuple"] == [1, [2, 3]] and "object" in as_json["obj"]
    json.dumps(as_json)


def test_code_version_labels_rows():
    assert manifest.code_version({"code": {"commit": "0123456789abcdef", "dirty": True}}) == "0123456789+dirty"
    assert manifest.code_version({"code": {"commit": "0123456789abcdef", "dirty": False}}) == "0123456789"
    assert manifest.code_version({"code": {"commit": None, "dirty": None}}) == ""
    assert manifest.code_version(None) == ""
