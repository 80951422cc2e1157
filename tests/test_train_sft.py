"""SFT training: sharding-invariant, exact accumulation, packing-invariant, stops on NaN."""

import json
import signal
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from train_helpers import cli_train, tiny_sft_config, write_sft_rows

from janus_jax.model import Mistral, MistralConfig
from janus_jax.objectives import REGISTRY
from janus_jax.train.metrics import read_metrics, train_flops_per_token
from janus_jax.train.run import model_config
from janus_jax.train.trainer import NonFiniteLossError, train


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_sft_rows(tmp_path_factory.mktemp("data") / "sft.jsonl")


def _losses(workdir):
    return np.array([r["loss"] for r in read_metrics(workdir) if "loss" in r])


def _final_params(workdir):
    ckpt_dir = workdir / "checkpoints"
    step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    restored = ocp.StandardCheckpointer().restore(ckpt_dir / str(step) / "state")
    return restored["params"]


MESH_8 = {"train.max_steps": 5, "mesh.shape": (2, 2, 2), "train.peak_flops_per_device": 1e12}
# Tests of the run's life (checkpoints, resume, failures) train on one device: they then share the one-device
# test's compiled train step (runs of any length do: TEST_SCHEDULE) instead of compiling one more mesh's.
ONE_DEVICE = {"mesh.shape": (1, 1, 1)}


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory, data_file):
    workdir = tmp_path_factory.mktemp("runs") / "eight"
    train(tiny_sft_config(data_file, **MESH_8), workdir)
    return workdir


def test_one_device_equals_eight_device_mesh(tmp_path, data_file, eight_device_run):
    one = tmp_path / "one"
    eight = eight_device_run
    train(tiny_sft_config(data_file, **{"train.max_steps": 5, **ONE_DEVICE}), one)
    np.testing.assert_allclose(_losses(one), _losses(eight), rtol=1e-5)
    assert len(_losses(one)) == 5
    for a, b in zip(jax.tree.leaves(_final_params(one)), jax.tree.leaves(_final_params(eight))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_gradient_accumulation_is_exact(tmp_path, data_file):
    whole = tmp_path / "whole"
    micro = tmp_path / "micro"
    train(tiny_sft_config(data_file, **{"train.max_steps": 3}), whole)
    train(tiny_sft_config(data_file, **{"train.max_steps": 3, "train.grad_accum_steps": 4}), micro)
    np.testing.assert_allclose(_losses(whole), _losses(micro), rtol=1e-5)
    grads = [r["grad_norm"] for r in read_metrics(whole)], [r["grad_norm"] for r in read_metrics(micro)]
    np.testing.assert_allclose(*grads, rtol=1e-4)


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_packing_on_and_off_give_the_same_loss(tmp_path, data_file):
    """One step over the whole (small) dataset: same examples, same token-weighted loss."""
    packed = tmp_path / "packed"
    unpacked = tmp_path / "unpacked"
    common = {"train.max_steps": 1, "train.global_batch_size": 40, "optimizer.lr": 0.0, "data.seq_len": 64}
    train(tiny_sft_config(data_file, **{**common, "data.packing": True}), packed)
    train(tiny_sft_config(data_file, **{**common, "data.packing": False}), unpacked)
    rows_p, rows_u = read_metrics(packed)[0], read_metrics(unpacked)[0]
    assert rows_p["loss_weight"] == rows_u["loss_weight"] > 0
    np.testing.assert_allclose(rows_p["loss"], rows_u["loss"], rtol=1e-5)


def test_a_non_finite_loss_stops_the_run_before_that_step_is_logged_or_saved(tmp_path, data_file, monkeypatch):
    """The loop and its hooks on a run whose third step reports a NaN loss: the guard stops it before the
    metrics row and the checkpoint of that step, and the manifest says the run failed. (A run that really
    diverges is test_nan_stops_before_any_checkpoint, in make test-all: its learning rate compiles a step
    of its own.)"""
    from janus_jax.train import trainer

    build_run = trainer.build_run

    def with_nan_from_step_3(cfg):
        run = build_run(cfg)
        step_fn, done = run.step_fn, []

        def step(state, batch, ref_params):
            state, metrics = step_fn(state, batch, ref_params)
            done.append(1)
            return state, ({**metrics, "loss": jnp.float32(jnp.nan)} if len(done) >= 3 else metrics)

        run.step_fn = step
        return run

    monkeypatch.setattr(trainer, "build_run", with_nan_from_step_3)
    workdir = tmp_path / "nan"
    cfg = tiny_sft_config(data_file, **{"train.max_steps": 4, "train.checkpoint_every": 1, **ONE_DEVICE})
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        train(cfg, workdir)
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]
    assert [r["step"] for r in read_metrics(workdir) if "loss" in r] == [1, 2]
    assert json.loads((workdir / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.slow  # a step compiled for its learning rate (25-50 s on 2 cores): run by make test-all
def test_nan_stops_before_any_checkpoint(tmp_path, data_file):
    workdir = tmp_path / "nan"
    cfg = tiny_sft_config(data_file, **{"train.max_steps": 4, "optimizer.lr": 1e30, "train.checkpoint_every": 1})
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(cfg, workdir)
    steps = [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    finite_steps = [r["step"] for r in read_metrics(workdir) if np.isfinite(r.get("loss", np.nan))]
    assert all(int(s) <= max(finite_steps, default=0) for s in steps)




def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_two_processes_equal_one_process(tmp_path, data_file, eight_device_run):
    """Two JAX processes x 4 CPU devices (gloo collectives) == one process x 8 devices."""
    workdir = tmp_path / "two"
    address = f"127.0.0.1:{_free_port()}"
    overrides = {"train.max_steps": 5, "mesh.shape": "(2,2,2)", "train.checkpoint_every": 1000}
    procs = [
        cli_train(
            workdir,
            data_file,
            overrides,
            {"JANUS_COORDINATOR_ADDRESS": address, "JANUS_NUM_PROCESSES": "2", "JANUS_PROCESS_ID": str(i)},
            devices=4,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    np.testing.assert_allclose(_losses(workdir), _losses(eight_device_run), rtol=1e-5)


@pytest.mark.slow  # 25-60 s on 2 cores: run by make test-all
def test_sigkill_and_resume_is_bitwise_exact(tmp_path, data_file):
    """Kill a CLI run after its step-2 checkpoint, rerun the same command: final parameters are
    bitwise equal to an uninterrupted run (here in-process, same devices and program)."""
    overrides = {"train.max_steps": 6, "train.checkpoint_every": 2, "train.async_checkpoint": True}
    workdir = tmp_path / "killed"
    victim = cli_train(workdir, data_file, overrides)
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "2").is_dir() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    completed = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert completed and completed[-1] < 6, completed
    resumed = cli_train(workdir, data_file, overrides)

    reference = tmp_path / "reference"
    train(tiny_sft_config(data_file, **overrides), reference)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    for a, b in zip(jax.tree.leaves(_final_params(reference)), jax.tree.leaves(_final_params(workdir))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["step"] for r in read_metrics(workdir)] == list(range(1, 7))


def test_rerunning_a_finished_run_trains_nothing_and_reports_its_metrics(tmp_path, data_file):
    """The same command twice (a relaunched sweep, `make demo` again): the second run ends at once."""
    cfg = tiny_sft_config(data_file, **{"train.max_steps": 0, "train.num_epochs": 1, **ONE_DEVICE})  # all of the data
    first = train(cfg, tmp_path)
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    metrics = (tmp_path / "metrics.jsonl").read_text()
    again = train(cfg, tmp_path)
    assert again == first and again["step"] == int(checkpoints[-1])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == checkpoints
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "completed"


def test_train_flops_count_every_matmul_weight_and_the_head_only_where_scored():
    cfg = MistralConfig.tiny()
    weights = sum(x.size for x in jax.tree.leaves(nnx.state(Mistral(cfg, rngs=nnx.Rngs(0)), nnx.Param)))
    head = cfg.vocab_size * cfg.hidden_size  # the LM head; the embedding (as large) is a lookup
    attention = 6 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * 128  # QK and PV, causal
    assert train_flops_per_token(cfg, 128) == 6 * (weights - head) + attention
    assert train_flops_per_token(cfg, 128, scored_fraction=0.25) == 6 * (weights - 2 * head) + 6 * head / 4 + attention


def test_logged_mfu_counts_the_head_only_at_the_scored_tokens(data_file, eight_device_run):
    mcfg = model_config(tiny_sft_config(data_file))
    rows = [r for r in read_metrics(eight_device_run) if "mfu" in r]
    assert len(rows) == 5
    for r in rows:  # mfu = tokens/s * FLOPs per token / (peak * devices), prompts unscored
        flops_per_token = r["mfu"] * 1e12 * jax.device_count() / r["tokens_per_second"]
        assert train_flops_per_token(mcfg, 128, 0.0) < flops_per_token < train_flops_per_token(mcfg, 128, 0.99)


def test_head_positions_follow_each_objective():
    pair = {
        "chosen_loss_weights": np.array([[0, 1, 1, 0]]),
        "rejected_loss_weights": np.array([[0, 0, 1, 0]]),
        "chosen_segment_ids": np.array([[1, 1, 1, 0]]),
        "rejected_segment_ids": np.array([[1, 1, 1, 1]]),
    }
    sft = {"loss_weights": np.array([[0, 0.5, 1]]), "segment_ids": np.ones((1, 3))}
    assert REGISTRY["sft"].head_positions(sft) == 2
    assert REGISTRY["dpo"].head_positions(pair) == 3
    assert REGISTRY["orpo"].head_positions(pair) == 7
    assert REGISTRY["rm"].head_positions(pair) == 0


def test_an_unreadable_newest_checkpoint_is_reported_and_the_run_resumes_from_the_one_before(tmp_path, data_file):
    """A torn newest step (its metadata lost) is named, set aside, and the run continues from step 2."""
    cfg = tiny_sft_config(data_file, **{"train.max_steps": 4, "train.checkpoint_every": 2, **ONE_DEVICE})
    train(cfg, tmp_path)
    (tmp_path / "checkpoints" / "4" / "state" / "_METADATA").unlink()
    final = train(cfg, tmp_path)
    assert final["step"] == 4
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "4" in names and any(n.startswith("4.unreadable-") for n in names), names
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    (problem,) = manifest["checkpoint_problems"]
    assert "checkpoints/4 cannot be read" in problem


def test_a_failed_run_records_its_end_in_the_manifest(tmp_path, data_file):
    cfg = tiny_sft_config(data_file, **{"train.max_steps": 2, "model.init_from": str(tmp_path / "no-such-model")})
    with pytest.raises(FileNotFoundError, match="no-such-model: not found"):
        train(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"


def test_unknown_config_keys_and_bad_values_are_named_before_anything_runs(tmp_path, capsys):
    from janus_jax.cli.train import main

    with pytest.raises(SystemExit) as e:
        main(["--config=configs/sft.py:tiny", f"--workdir={tmp_path}", "--config.optimizer.learnin_rate=abc"])
    assert e.value.code == 2
    assert "key 'optimizer.learnin_rate' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config=configs/sft.py:tiny", f"--workdir={tmp_path}", "--config.optimizer.warmup_step=3"])
    assert "key 'optimizer.warmup_step' does not exist (did you mean warmup_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config=configs/sft.py:tiny", f"--workdir={tmp_path}", "--config.optimizer.lr=abc"])
    assert "optimizer.lr" in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()


def test_the_prompt_template_travels_from_training_to_export_and_generation(tmp_path, data_file):
    """A ChatML run records its template in each checkpoint; export writes it as chat_template, and the
    programs that load the checkpoint (or the export) format prompts with it."""
    from janus_jax.prompts import get_template, template_of
    from janus_jax.serve.loading import load_for_inference
    from janus_jax.train.export import export

    workdir = tmp_path / "chatml"
    train(tiny_sft_config(data_file, **{"train.max_steps": 1, "data.template": "chatml", **ONE_DEVICE}), workdir)
    assert load_for_inference(str(workdir)).template == "chatml"
    out = export(str(workdir), str(tmp_path / "hf"), dtype="float32")
    assert template_of(out) == "chatml"
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == get_template("chatml").jinja
    assert load_for_inference(str(out)).template == "chatml"
