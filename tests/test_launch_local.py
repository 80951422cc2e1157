"""Real JAX processes driven by the launcher: multi-process equality, failure handling, sweeps, SLURM script.

The job here is a small data-parallel trainer with the same contract as ``janus-train`` (config flags,
``JANUS_*`` variables, metrics.jsonl and manifest.json in the workdir), so these tests exercise the
launcher itself in seconds; tests/test_launch_trainer.py drives the real trainer.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TOY_TRAIN = """
import json, os, time
from absl import app, flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file("config")
WORKDIR = flags.DEFINE_string("workdir", None, "run directory")


def main(_):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from janus_jax import manifest

    cfg = CONFIG.value
    if os.environ.get("JANUS_COORDINATOR_ADDRESS"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(os.environ["JANUS_COORDINATOR_ADDRESS"],
                                   int(os.environ["JANUS_NUM_PROCESSES"]), int(os.environ["JANUS_PROCESS_ID"]))
    workdir = WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    pid_file = os.path.join(workdir, f"pid_{jax.process_index()}")
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    if cfg.width < 1:
        raise ValueError(f"width must be positive, got {cfg.width}")
    mesh = Mesh(np.array(jax.devices()), ("data",))
    if jax.process_index() == 0:
        manifest.write_manifest(workdir, config=cfg, mesh=mesh)
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    true_w = np.random.default_rng(0).normal(size=(cfg.width,)).astype(np.float32)
    w = jnp.zeros((cfg.width,), jnp.float32)

    @jax.jit
    def step_fn(w, x, y, lr):
        loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        return w - lr * grad, loss

    rows = cfg.batch // jax.process_count()
    lo = jax.process_index() * rows
    for step in range(cfg.steps):
        x = np.random.default_rng(step + 1).normal(size=(cfg.batch, cfg.width)).astype(np.float32)
        y = x @ true_w
        lr = cfg.lr * min(1.0, (step + 1) / (cfg.warmup + 1))
        w, loss = step_fn(w, jax.make_array_from_process_local_data(sharding, x[lo:lo + rows]),
                          jax.make_array_from_process_local_data(sharding, y[lo:lo + rows]), lr)
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"step": step + 1, "loss": float(loss), "learning_rate": lr}) + "\\n")
            print(f"step {step + 1} loss {float(loss):.6f} on {jax.device_count()} devices", flush=True)
        time.sleep(cfg.sleep)
    if jax.process_index() == 0:
        manifest.finish_manifest(workdir, "completed")


if __name__ == "__main__":
    app.run(main)
"""

TOY_CONFIG = """
import ml_collections


def get_config(preset="tiny"):
    return ml_collections.ConfigDict(dict(width=4, lr=0.1, warmup=0, batch=16, steps=3, sleep=0.0))
"""


@pytest.fixture
def project(tmp_path):
    """A scratch project: the toy trainer and its config; the launcher runs from here."""
    (tmp_path / "toy_train.py").write_text(TOY_TRAIN)
    (tmp_path / "toy_config.py").write_text(TOY_CONFIG)
    return tmp_path


def _env():
    env = dict(os.environ)
    for name in ("JANUS_COORDINATOR_ADDRESS", "JANUS_NUM_PROCESSES", "JANUS_PROCESS_ID"):
        env.pop(name, None)
    return env


def _launch(project, *argv, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "launch", *argv],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def _toy(workdir, *overrides):
    return [sys.executable, "toy_train.py", "--config=toy_config.py", f"--workdir={workdir}", *overrides]


def _losses(workdir):
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, only not yet reaped
        return stat.read().split(") ")[1][0] != "Z"


def test_two_processes_match_one_process(project):
    two = _launch(project, "run", "--target", "local", "--processes", "2", "--", *_toy(project / "two"))
    assert two.returncode == 0, two.stderr
    one = _launch(project, "run", "--target", "local", "--processes", "1", "--", *_toy(project / "one"))
    assert one.returncode == 0, one.stderr
    # Process 0's output is streamed; the other process logs to a file.
    assert "step 3 loss" in two.stdout and "on 8 devices" in two.stdout
    assert (project / "two" / "logs" / "process_1.log").exists()
    assert len(_losses(project / "two")) == 3
    assert _losses(project / "two") == pytest.approx(_losses(project / "one"), rel=1e-6)
    recorded = json.loads((project / "two" / "manifest.json").read_text())
    assert recorded["devices"]["process_count"] == 2 and recorded["devices"]["local_device_count"] == 4
    assert recorded["status"] == "completed"


def test_killing_one_process_stops_the_job(project):
    workdir = project / "killed"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launch",
            "run",
            "--target",
            "local",
            "--processes",
            "2",
            "--",
            *_toy(workdir, "--config.steps=100000", "--config.sleep=0.05"),
        ],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int((workdir / f"pid_{i}").read_text()) for i in range(2)]
        os.kill(pids[1], signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = launcher.communicate(timeout=30)
        stopped_after = time.monotonic() - killed_at
    finally:
        launcher.kill()
    assert launcher.returncode == 128 + signal.SIGKILL
    assert stopped_after < 10, stopped_after
    assert "process 1 killed by signal 9; stopping processes [0]" in err
    assert not any(_alive(pid) for pid in pids)


def test_ctrl_c_is_forwarded_to_every_process(project):
    workdir = project / "interrupted"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launch",
            "run",
            "--target",
            "local",
            "--processes",
            "2",
            "--",
            *_toy(workdir, "--config.steps=100000", "--config.sleep=0.05"),
        ],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int((workdir / f"pid_{i}").read_text()) for i in range(2)]
        launcher.send_signal(signal.SIGINT)
        _, err = launcher.communicate(timeout=30)
    finally:
        launcher.kill()
    assert launcher.returncode == 130
    assert "got SIGINT; stopping all processes" in err
    assert not any(_alive(pid) for pid in pids)


def test_children_die_with_a_killed_launcher(project):
    workdir = project / "orphans"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launch",
            "run",
            "--target",
            "local",
            "--processes",
            "2",
            "--",
            *_toy(workdir, "--config.steps=100000", "--config.sleep=0.05"),
        ],
        cwd=project,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not all((workdir / f"pid_{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int((workdir / f"pid_{i}").read_text()) for i in range(2)]
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.slow  # 15-25 s on 2 cores (make test-all); test_gcs_outputs.py runs a sweep from the command line
def test_four_point_sweep_with_a_broken_point_and_collect(project):
    (project / "grid.py").write_text(
        textwrap.dedent("""
        def get_sweep():
            return {"base": "toy_config.py:tiny",
                    "points": [{"lr": 0.05, "warmup": 0}, {"lr": 0.05, "warmup": 2},
                               {"lr": 0.1, "width": -1}, {"lr": 0.1, "warmup": 2}]}
        """)
    )
    sweep_dir = project / "sweeps" / "grid"
    result = _launch(
        project,
        "sweep",
        "grid.py",
        "--target",
        "local",
        "--sweep-dir",
        str(sweep_dir),
        "--",
        sys.executable,
        "toy_train.py",
    )
    assert result.returncode == 1, result.stderr
    assert "02-lr=0.1-width=-1: FAILED with exit code 1; continuing" in result.stderr
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["status"] for p in record["points"]] == ["completed", "completed", "failed", "completed"]
    assert "width must be positive" in (sweep_dir / "02-lr=0.1-width=-1" / "logs" / "process_0.log").read_text()

    collected = _launch(project, "collect", str(sweep_dir))
    assert collected.returncode == 0, collected.stderr
    table = collected.stdout.splitlines()
    assert len(table) == 2 + 4
    for line, name in zip(table[2:], [p["name"] for p in record["points"]], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == name
        final_loss = cells[table[0].strip("|").split("|").index(" final_loss ")]
        if "width=-1" in name:
            assert final_loss == "" and "failed" in cells
        else:
            assert float(final_loss) == pytest.approx(_losses(sweep_dir / name)[-1], rel=1e-5)

    # A rerun skips completed points and retries only the failed one.
    rerun = _launch(
        project,
        "sweep",
        "grid.py",
        "--target",
        "local",
        "--sweep-dir",
        str(sweep_dir),
        "--",
        sys.executable,
        "toy_train.py",
    )
    assert rerun.returncode == 1
    assert rerun.stderr.count("already completed, skipped") == 3


FAKE_SCONTROL = """#!/bin/sh
# scontrol show hostnames NODELIST: this machine stands in for every node.
echo 127.0.0.1
echo 127.0.0.2
"""

FAKE_SRUN = """#!/bin/bash
# srun [options] CMD...: one task per SLURM_NTASKS, each with its SLURM_PROCID, like a real allocation.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def test_slurm_script_runs_a_two_process_job(project, tmp_path):
    """Execute the generated sbatch script with stand-ins for srun/scontrol: the env wiring is real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    venv = Path(sys.executable).parent.parent
    workdir = project / "slurm_run"
    dry = _launch(
        project,
        "run",
        "--target",
        "slurm",
        "--nodes",
        "2",
        "--gpus-per-node",
        "1",
        "--venv",
        str(venv),
        "--dry-run",
        "--",
        *_toy(workdir),
    )
    assert dry.returncode == 0, dry.stderr
    script = project / "job.sbatch"
    script.write_text(dry.stdout)
    env = _env() | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "step 3 loss" in ran.stdout and "on 8 devices" in ran.stdout
    recorded = json.loads((workdir / "manifest.json").read_text())
    assert recorded["devices"]["process_count"] == 2
