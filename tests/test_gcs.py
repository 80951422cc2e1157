"""gs:// workdirs, against a real GCS emulator (gcp-storage-emulator on 127.0.0.1): training writes its
checkpoints, metrics, manifest and loss plot to the bucket; export, serving and resumption read them back."""

import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from train_helpers import cli_train, tiny_sft_config, write_sft_rows

pytest_plugins = ["gcs_fixtures"]  # gcs_emulator, gcs_env, gs_dir
REPO = Path(__file__).resolve().parents[1]


def _names(url: str) -> list[str]:
    from gcs_fixtures import names

    return names(url)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_sft_rows(tmp_path_factory.mktemp("data") / "sft.jsonl")


def _exported_weights(source: str, out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    from janus_jax.cli.export import main as export_main

    assert export_main([f"--checkpoint={source}", f"--out={out}", "--dtype=float32"]) == 0
    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(f))
    assert tensors, out
    return tensors


def _assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_the_path_layer_writes_appends_and_reads_gs_objects(gs_dir):
    """What GCS lacks (append, rename) and what epath gets wrong about URLs, on the emulator."""
    from janus_jax import paths
    from janus_jax.jsonio import Appender, read_jsonl

    log = f"{gs_dir}/log.jsonl"
    paths.write_atomic(log, '{"step": 1}\n{"step": 2, "torn')  # a killed writer's torn last line
    appender = Appender(log)
    appender.write({"step": 3})
    appender.close()
    assert read_jsonl(log, skip_bad_lines=True) == [{"step": 1}, {"step": 3}]
    assert str(paths.absolute(gs_dir, resolve=True)) == gs_dir and paths.is_url(gs_dir)
    assert not paths.is_url("relative/dir") and paths.absolute("relative/dir").is_absolute()
    assert _names(gs_dir) == ["log.jsonl"]  # nothing left beside it: no temporary objects


def test_an_unreadable_gs_checkpoint_is_set_aside_and_the_one_before_restored(gs_dir):
    """The `N.unreadable-*` rename is a copy on GCS; the step is gone from the manager afterwards."""
    from etils import epath

    from janus_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(f"{gs_dir}/checkpoints", async_save=False)
    for step in (1, 2):
        ckpt.save(step, {"w": np.full(4, float(step), np.float32)}, {"data_step": step})
    (epath.Path(gs_dir) / "checkpoints" / "2" / "state" / "_METADATA").unlink()
    step, state, meta, problems = ckpt.restore_newest_readable({"w": jax.ShapeDtypeStruct((4,), np.float32)})
    ckpt.close()
    assert (step, meta["data_step"]) == (1, 1)
    np.testing.assert_array_equal(state["w"], np.ones(4, np.float32))
    (problem,) = problems
    assert f"{gs_dir}/checkpoints/2 cannot be read" in problem
    names = _names(f"{gs_dir}/checkpoints")
    assert "1" in names and "2" not in names and any(n.startswith("2.unreadable-") for n in names), names
    assert Checkpointer(f"{gs_dir}/checkpoints", async_save=False).latest_step() == 1


@pytest.mark.slow  # a run, an export and two loads: 40-60 s on 2 cores (make test-all); the gs:// path layer,
# its checkpoint fallback and test_gcs_outputs.py's programs writing into a bucket stay in make test
def test_a_gs_workdir_holds_the_whole_run_and_exports_as_its_local_copy_does(tmp_path, data_file, gs_dir):
    """One run into the bucket: checkpoints, metrics, manifest, loss plot and TensorBoard events land there;
    janus-export and the serving loader read the checkpoint from gs:// exactly as from a local copy."""
    from etils import epath

    from janus_jax.manifest import read_manifest
    from janus_jax.serve.loading import load_for_inference
    from janus_jax.train.metrics import read_metrics
    from janus_jax.train.trainer import train

    cfg = tiny_sft_config(data_file, **{"train.max_steps": 2, "train.checkpoint_every": 1})
    final = train(cfg, gs_dir)

    assert {"checkpoints", "manifest.json", "metrics.jsonl", "loss.png", "tensorboard"} <= set(_names(gs_dir))
    assert _names(f"{gs_dir}/checkpoints") == ["1", "2"]
    rows = read_metrics(gs_dir)
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["loss"] == final["loss"]
    manifest = read_manifest(gs_dir)
    assert (manifest["status"], manifest["workdir"], manifest["name"]) == ("completed", gs_dir, gs_dir.rsplit("/")[-1])
    assert epath.Path(f"{gs_dir}/loss.png").read_bytes().startswith(b"\x89PNG")
    assert _names(f"{gs_dir}/tensorboard")[0].startswith("events.out.tfevents")

    from gcs_fixtures import download

    local = download(gs_dir, tmp_path / "copy")
    _assert_same_weights(_exported_weights(gs_dir, tmp_path / "from_gs"), _exported_weights(str(local), tmp_path / "l"))
    assert load_for_inference(f"{gs_dir}/checkpoints/1").template == "mistral_inst"
    assert train(cfg, gs_dir) == final  # the same command again: a finished run, read back from the bucket
    assert read_manifest(gs_dir)["status"] == "completed" and len(read_manifest(gs_dir)["attempts"]) == 2


@pytest.mark.slow  # three tiny runs (two of them CLI processes): minutes on 2 cores
def test_a_run_killed_after_its_first_gs_checkpoint_resumes_to_the_params_of_an_uninterrupted_local_run(
    tmp_path, data_file, gs_dir, gcs_env
):
    from etils import epath

    from janus_jax.manifest import read_manifest
    from janus_jax.train.metrics import read_metrics
    from janus_jax.train.trainer import train

    overrides = {"train.max_steps": 4, "train.checkpoint_every": 2, "train.async_checkpoint": True}
    victim = cli_train(gs_dir, data_file, overrides, gcs_env)
    first = epath.Path(gs_dir) / "checkpoints" / "2" / "commit_success.txt"
    deadline = time.time() + 600
    while not first.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    out = victim.communicate()[0]
    completed = [n for n in _names(f"{gs_dir}/checkpoints") if n.isdigit()]
    assert completed == ["2"], (completed, out[-3000:])
    assert read_manifest(gs_dir)["status"] == "running"  # killed: never recorded its end

    resumed = cli_train(gs_dir, data_file, overrides, gcs_env)
    reference = tmp_path / "uninterrupted"
    train(tiny_sft_config(data_file, **overrides), reference)
    out = resumed.communicate(timeout=900)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert "resumed from step 2" in out
    assert [r["step"] for r in read_metrics(gs_dir)] == [1, 2, 3, 4]
    assert read_manifest(gs_dir)["status"] == "completed"
    _assert_same_weights(_exported_weights(gs_dir, tmp_path / "gs"), _exported_weights(str(reference), tmp_path / "l"))


@pytest.mark.slow  # an SFT run, a reference pass over 180 pairs and a DPO step: minutes on 2 cores
def test_dpo_in_a_bucket_starts_from_a_gs_sft_run_and_reads_reference_logps_precomputed_into_its_workdir(
    data_file, gs_dir
):
    from configs import dpo
    from janus_jax.manifest import read_manifest
    from janus_jax.train.precompute import precompute
    from janus_jax.train.trainer import train

    sft_dir, dpo_dir = f"{gs_dir}/sft", f"{gs_dir}/dpo"
    train(tiny_sft_config(data_file, **{"train.max_steps": 1}), sft_dir)
    cfg = dpo.get_config("tiny")
    cfg.model.init_from = sft_dir
    cfg.data.source = str(REPO / "data" / "samples" / "dpo.jsonl")
    cfg.data.eval_fraction = 0.0
    cfg.dpo.reference = "precomputed"
    cfg.train.max_steps = 1
    path = precompute(cfg, workdir=dpo_dir)
    assert str(path) == f"{dpo_dir}/reference_logps.npz" and path.exists()
    final = train(cfg, dpo_dir)
    assert final["step"] == 1 and np.isfinite(final["loss"])
    manifest = read_manifest(dpo_dir)
    assert manifest["status"] == "completed" and manifest["config"]["model"]["init_from"] == sft_dir
