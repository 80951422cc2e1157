"""Launcher command building, input refusal, sweep expansion and result collection (no JAX processes)."""

import csv
import io
import json
import os
import shlex
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from janus_jax import manifest
from launch import cli, local, sweep, tpu

REPO = Path(__file__).resolve().parent.parent
JOB = ["janus-train", "--config=configs/toy.py:tiny", "--workdir=gs://bucket/runs/a b", "--config.optimizer.lr=1e-4"]

CONFIG_FILE = """
import ml_collections


def get_config(preset="tiny"):
    config = ml_collections.ConfigDict()
    config.optimizer = ml_collections.ConfigDict({"lr": 1e-3, "warmup_steps": 0})
    config.steps = 3
    return config
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "toy_config.py"
    path.write_text(CONFIG_FILE)
    return path


def _touch(path):
    """A job command that creates ``path`` and ignores any further arguments."""
    return [sys.executable, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()", str(path)]


def _main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def in_project(tmp_path, monkeypatch):
    """A project directory holding configs/toy.py, as the working directory."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "toy.py").write_text(CONFIG_FILE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _gcloud(*args):
    return ["gcloud", "compute", "tpus", *args, "--zone=us-central2-b", "--project=proj"]


def test_tpu_dry_run_prints_every_command(capsys, in_project):
    """A 2-worker pod (v4-16: 8 chips on 2 hosts) through a queued resource, on spot capacity."""
    code, out, _ = _main(
        capsys,
        "run",
        "--target",
        "tpu",
        "--name",
        "pod-1",
        "--zone",
        "us-central2-b",
        "--project",
        "proj",
        "--accelerator-type",
        "v4-16",
        "--queued",
        "--spot",
        "--max-restarts",
        "5",
        "--dry-run",
        "--",
        *JOB,
    )
    assert code == 0
    setup = (
        "set -e; (command -v python3.11 >/dev/null || (sudo apt-get update -q && sudo apt-get install -y -q "
        "python3.11 python3.11-venv)); mkdir -p ~/janus-jax && tar -xzf ~/janus-jax-src.tar.gz -C ~/janus-jax && "
        "cd ~/janus-jax && (test -x .venv/bin/python || python3.11 -m venv .venv) && "
        ".venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e '.[tpu]'"
    )
    job = "janus-train --config=configs/toy.py:tiny '--workdir=gs://bucket/runs/a b' --config.optimizer.lr=1e-4"
    run = (
        "cd ~/janus-jax && source .venv/bin/activate && echo $$ > ~/janus-job.pid && W=$(curl -s -H "
        "Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/"
        f'agent-worker-number || echo 0); if [ "$W" = 0 ]; then {job} 2>&1 | tee ~/janus-job.log; '
        f"exit ${{PIPESTATUS[0]}}; else {job} > ~/janus-job.log 2>&1; fi"
    )
    expected = [
        _gcloud("queued-resources", "describe", "pod-1", "--format=value(state.state)"),
        _gcloud(
            "queued-resources", "create", "pod-1", "--node-id=pod-1", "--accelerator-type=v4-16",
            "--runtime-version=tpu-ubuntu2204-base", "--spot",
        ),
        _gcloud("tpu-vm", "scp", "janus-jax-src.tar.gz", "pod-1:janus-jax-src.tar.gz", "--worker=all"),
        _gcloud("tpu-vm", "ssh", "pod-1", "--worker=all", f"--command={setup}"),
        _gcloud("tpu-vm", "ssh", "pod-1", "--worker=all", f"--command={tpu.stop_script()}"),
        _gcloud("tpu-vm", "ssh", "pod-1", "--worker=all", f"--command={run}"),
    ]  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("# janus-jax-src.tar.gz: git-tracked and untracked non-ignored files of ")
    assert [shlex.split(line) for line in lines if not line.startswith("#")] == expected
    assert "up to 5 times, resuming from the workdir's last checkpoint" in out


class FakeCloud:
    """gcloud as a TPU pod sees it: a queued resource that is granted after one poll, and a job that a
    preemption kills on its first run (the queued resource turns SUSPENDED) and that succeeds on the next."""

    def __init__(self, job_fails=1, preempt=True):
        self.commands = []
        self.state = None
        self.job_fails = job_fails
        self.preempt = preempt

    def __call__(self, command, capture):
        self.commands.append(command)
        verb = " ".join(command[3:5])
        if verb == "queued-resources describe":
            return (0, self.state) if self.state else (1, "")
        if verb == "queued-resources create":
            self.state = "WAITING_FOR_RESOURCES"
            return 0, ""
        if verb == "queued-resources delete":
            self.state = None
            return 0, ""
        if verb == "tpu-vm ssh" and "agent-worker-number" in command[-3]:
            if self.job_fails:
                self.job_fails -= 1
                if self.preempt:
                    self.state = "SUSPENDED"
                return 143, ""
            return 0, ""
        return 0, ""

    def grant(self, seconds):
        if self.state == "WAITING_FOR_RESOURCES":
            self.state = "ACTIVE"

    def verbs(self):
        names = []
        for command in self.commands:
            verb = command[4]
            if verb == "ssh":
                script = command[-3]
                verb = "run" if "agent-worker-number" in script else "stop" if "kill" in script else "setup"
            names.append(verb)
        return names


def _pod(**changes):
    values = dict(name="pod-1", zone="us-central2-b", project="proj", accelerator_type="v5e-16", queued=True)
    return tpu.TpuTarget(**{**values, **changes})


def test_tpu_preempted_job_is_rerun_on_a_new_queued_resource(tmp_path, capsys):
    cloud = FakeCloud(job_fails=1, preempt=True)
    (tmp_path / "setup.py").write_text("")
    code = tpu.run_tpu(_pod(), JOB, root=tmp_path, dry_run=False, runner=cloud, sleep=cloud.grant)
    assert code == 0
    assert cloud.verbs() == [
        "describe", "create", "describe", "scp", "setup", "stop", "run",  # queued, granted after a poll, preempted
        "describe", "describe", "delete", "create", "describe", "scp", "setup", "stop", "run",  # queued again
    ]  # fmt: skip
    create = cloud.commands[1]
    assert "--accelerator-type=v5litepod-16" in create and "--runtime-version=v2-alpha-tpuv5-lite" in create
    assert cloud.commands[-1] == cloud.commands[6]  # the same command: the job resumes from its workdir
    err = capsys.readouterr().err
    assert "job exited with code 143 (TPU state: SUSPENDED); rerun 1 of 3" in err
    assert "TPU pod-1 is SUSPENDED: deleting it to create it again" in err


def test_tpu_failed_worker_reruns_on_the_same_pod_and_gives_up_after_max_restarts(tmp_path, capsys):
    cloud = FakeCloud(job_fails=5, preempt=False)
    cloud.state = "ACTIVE"  # an existing queued resource is reused, nothing is created
    code = tpu.run_tpu(_pod(max_restarts=2), JOB, root=tmp_path, dry_run=False, runner=cloud, sleep=cloud.grant)
    assert code == 143
    verbs = cloud.verbs()
    assert "create" not in verbs and verbs.count("scp") == 1  # installed once: the workers kept it
    assert verbs.count("run") == 3 and verbs.count("stop") == 3  # each rerun first ends the last one
    assert "giving up" in capsys.readouterr().err


def test_tpu_that_does_not_exist_needs_an_accelerator_type(tmp_path, capsys):
    cloud = FakeCloud()
    code = tpu.run_tpu(_pod(accelerator_type=None), JOB, root=tmp_path, dry_run=False, runner=cloud, sleep=cloud.grant)
    assert code == 1
    err = capsys.readouterr().err
    assert "TPU 'pod-1' does not exist in us-central2-b; give --accelerator-type to create it" in err


def test_slurm_dry_run_prints_the_script(capsys, in_project):
    code, out, _ = _main(
        capsys,
        "run",
        "--target",
        "slurm",
        "--nodes",
        "2",
        "--gpus-per-node",
        "8",
        "--partition",
        "gpu",
        "--time",
        "24:00:00",
        "--venv",
        "env",
        "--dry-run",
        "--",
        "janus-train",
        "--config=configs/toy.py:tiny",
        "--workdir=/shared/run1",
    )
    assert code == 0
    root = in_project
    assert out == textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH --job-name=janus
        #SBATCH --nodes=2
        #SBATCH --ntasks-per-node=1
        #SBATCH --gpus-per-node=8
        #SBATCH --output=/shared/run1/slurm/slurm-%j.out
        #SBATCH --partition=gpu
        #SBATCH --time=24:00:00
        # One JAX process per node, each driving its node's GPUs.
        set -euo pipefail
        cd {root}
        source {root / "env"}/bin/activate
        COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
        export JANUS_COORDINATOR_ADDRESS="${{COORDINATOR_HOST}}:$((20000 + SLURM_JOB_ID % 20000))"
        export JANUS_NUM_PROCESSES="$SLURM_NTASKS"
        srun --kill-on-bad-exit=1 bash -c 'export JANUS_PROCESS_ID="$SLURM_PROCID"; exec janus-train \
--config=configs/toy.py:tiny --workdir=/shared/run1'
        """)
    assert not Path("/shared/run1").exists()


def test_source_archive_ships_the_checkout_without_venv(tmp_path):
    archive = tpu.make_source_archive(REPO, tmp_path / "src.tar.gz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"setup.py", "launch/cli.py", "janus_jax/manifest.py"} <= names
    assert not any(n.startswith((".venv/", ".git/")) or "__pycache__" in n for n in names)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--target", "moon", "--", "true"], "invalid choice: 'moon'"),
        (["run", "--target", "tpu", "--zone", "z", "--", "true"], "--target tpu needs --name"),
        (["run", "--target", "local", "--nodes", "2", "--", "true"], "--nodes applies to --target slurm"),
        (["run", "--target", "local", "--processes", "0", "--", "true"], "--processes must be >= 1"),
    ],
)
def test_bad_target_options_are_refused(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_override_key_is_refused_before_start(capsys, config_file, tmp_path):
    marker = tmp_path / "started"
    code, _, err = _main(
        capsys, "run", "--target", "local", "--", *_touch(marker), f"--config={config_file}", "--config.optimizer.lrr=1"
    )
    assert code == 2
    assert "--config.optimizer.lrr: key 'optimizer.lrr' does not exist (did you mean lr?)" in err
    assert not marker.exists()


def test_unparsable_override_value_is_refused(capsys, config_file):
    code, _, err = _main(
        capsys,
        "run",
        "--target",
        "slurm",
        "--nodes",
        "1",
        "--gpus-per-node",
        "1",
        "--dry-run",
        "--",
        "janus-train",
        f"--config={config_file}",
        "--config.steps=lots",
    )
    assert code == 2 and "--config.steps=lots" in err


def test_workdir_with_a_different_run_is_refused(capsys, config_file, tmp_path):
    workdir = tmp_path / "run"
    manifest.write_manifest(workdir, config={"optimizer": {"lr": 1e-3, "warmup_steps": 0}, "steps": 99})
    marker = tmp_path / "started"
    code, _, err = _main(
        capsys, "run", "--target", "local", "--", *_touch(marker), f"--config={config_file}", f"--workdir={workdir}"
    )
    assert code == 2 and "already holds a different run" in err and "steps: 99 -> 3" in err
    assert not marker.exists()


def test_same_config_in_workdir_means_resume(capsys, config_file, tmp_path):
    workdir = tmp_path / "run"
    manifest.write_manifest(workdir, config={"optimizer": {"lr": 1e-3, "warmup_steps": 0}, "steps": 3})
    marker = tmp_path / "started"
    code, _, _ = _main(
        capsys, "run", "--target", "local", "--", *_touch(marker), f"--config={config_file}", f"--workdir={workdir}"
    )
    assert code == 0 and marker.exists()


def _write_sweep(tmp_path, body, name="toy_sweep"):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_grid_expands_to_named_points(tmp_path, config_file):
    path = _write_sweep(
        tmp_path,
        f"""
        def get_sweep():
            return {{"base": "{config_file}:tiny",
                     "grid": {{"optimizer.lr": [1e-4, 3e-4], "optimizer.warmup_steps": [0, 5]}}}}
        """,
    )
    loaded = sweep.load_sweep(path)
    assert loaded.name == "toy_sweep" and loaded.swept_keys == ("optimizer.lr", "optimizer.warmup_steps")
    assert [p.name for p in loaded.points] == [
        "00-lr=0.0001-warmup_steps=0",
        "01-lr=0.0001-warmup_steps=5",
        "02-lr=0.0003-warmup_steps=0",
        "03-lr=0.0003-warmup_steps=5",
    ]
    assert loaded.points[3].overrides == {"optimizer.lr": 3e-4, "optimizer.warmup_steps": 5}
    argv = sweep.point_argv(loaded, loaded.points[1], ["janus-train"], tmp_path / "w")
    assert argv == [
        "janus-train",
        f"--config={config_file}:tiny",
        f"--workdir={tmp_path / 'w'}",
        "--config.optimizer.lr=0.0001",
        "--config.optimizer.warmup_steps=5",
    ]


def test_points_list_and_ambiguous_leaf_names():
    names = sweep.point_names([{"a.lr": 1, "b.lr": 2, "flag": True}, {"a.lr": 3, "b.lr": 4, "flag": False}])
    assert names == ["00-a.lr=1-b.lr=2-flag=True", "01-a.lr=3-b.lr=4-flag=False"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('def get_sweep():\n    return {"base": "c.py:tiny"}\n', "exactly one of 'grid'"),
        ('def get_sweep():\n    return {"base": "c.py:tiny", "grid": {}}\n', "non-empty dict"),
        ('def get_sweep():\n    return {"base": "c.py:tiny", "grid": {"a": []}}\n', "grid key 'a'"),
        ('def get_sweep():\n    return {"base": "c.py", "grid": {"a": [1]}, "seed": 1}\n', "unknown sweep field"),
        ("BASE = 'c.py'\n", "no get_sweep()"),
    ],
)
def test_bad_sweep_files_are_refused(tmp_path, capsys, body, message):
    path = tmp_path / "bad.py"
    path.write_text(body)
    code, _, err = _main(capsys, "sweep", str(path), "--target", "local", "--sweep-dir", str(tmp_path / "s"))
    assert code == 2 and message in err
    assert not (tmp_path / "s").exists()


def test_sweep_with_an_unknown_key_starts_nothing(tmp_path, capsys, config_file):
    path = _write_sweep(
        tmp_path,
        f"""
        def get_sweep():
            return {{"base": "{config_file}", "points": [{{"optimizer.lr": 1e-4}}, {{"optimizer.beta": 0.1}}]}}
        """,
    )
    marker = tmp_path / "started"
    code, _, err = _main(
        capsys, "sweep", str(path), "--target", "local", "--sweep-dir", str(tmp_path / "s"), "--", *_touch(marker)
    )
    assert code == 2
    assert "point 01-beta=0.1" in err and "'optimizer.beta' does not exist" in err and "nothing was started" in err
    assert not marker.exists() and not (tmp_path / "s").exists()


def test_slurm_sweep_dry_run_prints_one_script_per_point(tmp_path, capsys, config_file):
    path = _write_sweep(
        tmp_path,
        f"""
        def get_sweep():
            return {{"base": "{config_file}", "grid": {{"steps": [1, 2, 3]}}}}
        """,
    )
    code, out, _ = _main(
        capsys,
        "sweep",
        str(path),
        "--target",
        "slurm",
        "--nodes",
        "1",
        "--gpus-per-node",
        "4",
        "--sweep-dir",
        str(tmp_path / "s"),
        "--dry-run",
    )
    assert code == 0 and out.count("#!/bin/bash") == 3
    assert f"--workdir={tmp_path}/s/02-steps=3 --config.steps=3'" in out
    assert "#SBATCH --job-name=01-steps=2" in out
    assert not (tmp_path / "s").exists()


def test_collect_tables_final_and_best_metrics(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    points = []
    for index, (lr, losses) in enumerate([(1e-4, [3.0, 2.0, 2.5]), (3e-4, [3.0, 1.0, 0.5])]):
        workdir = sweep_dir / f"0{index}-lr={lr}"
        manifest.write_manifest(workdir, config={"lr": lr})
        manifest.finish_manifest(workdir, "completed")
        rows = [{"step": s + 1, "loss": loss} for s, loss in enumerate(losses)]
        rows.append({"step": 3, "eval/loss": losses[-1] + 0.1})
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if index == 1:
            text += '{"step": 4, "loss": 0.4'  # a run killed mid-write
        (workdir / "metrics.jsonl").write_text(text)
        points.append(
            {"name": workdir.name, "workdir": str(workdir), "overrides": {"optimizer.lr": lr}, "status": "completed"}
        )
    failed = sweep_dir / "02-lr=bad"
    points.append(
        {
            "name": failed.name,
            "workdir": str(failed),
            "overrides": {"optimizer.lr": "bad"},
            "status": "failed",
            "returncode": 1,
        }
    )
    (sweep_dir / "sweep.json").write_text(json.dumps({"points": points, "swept_keys": ["optimizer.lr"]}))

    code, out, err = _main(capsys, "collect", str(sweep_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("| point | optimizer.lr | status | last_step | final_loss | best_loss |")
    assert len(lines) == 5
    table = list(csv.DictReader(io.StringIO((sweep_dir / "results.csv").read_text())))
    assert [r["status"] for r in table] == ["completed", "completed", "failed"]
    assert [r["final_loss"] for r in table] == ["2.5", "0.5", ""]
    assert [r["best_loss"] for r in table] == ["2.0", "0.5", ""]
    assert [r["best_loss_step"] for r in table] == ["2", "3", ""]
    assert [r["final_eval_loss"] for r in table] == ["2.6", "0.6", ""]
    assert [r["malformed_metric_lines"] for r in table] == ["0", "1", "0"]
    assert "metrics.jsonl:5: not JSON" in err
    assert (sweep_dir / "results.png").stat().st_size > 0
    assert (sweep_dir / "results.md").read_text() == out


def test_collect_missing_directory_is_an_error(tmp_path, capsys):
    code, _, err = _main(capsys, "collect", str(tmp_path / "nothing"))
    assert code == 2 and "does not exist" in err


def test_fixed_overrides_apply_to_every_point(tmp_path, config_file):
    path = _write_sweep(
        tmp_path,
        f"""
        def get_sweep():
            return {{"base": "{config_file}", "fixed": {{"steps": 1, "optimizer.lr": 0.5}},
                     "grid": {{"optimizer.lr": [0.1, 0.2]}}}}
        """,
    )
    loaded = sweep.load_sweep(path)
    argvs = sweep.check_points(loaded, tmp_path / "s", ["janus-train"])
    assert [a[3:] for a in argvs.values()] == [
        ["--config.steps=1", "--config.optimizer.lr=0.1"],
        ["--config.steps=1", "--config.optimizer.lr=0.2"],
    ]


@pytest.mark.parametrize("name", ["sft_lr_warmup", "sft_system_messages", "dpo_beta_lr"])
def test_shipped_sweeps_resolve_against_their_base_config(name, monkeypatch):
    monkeypatch.chdir(REPO)
    loaded = sweep.load_sweep(REPO / "configs" / "sweeps" / f"{name}.py")
    argvs = sweep.check_points(loaded, Path("runs/sweeps") / name, ["janus-train"], check_workdirs=False)
    assert len(argvs) == len(loaded.points) >= 3
    if name == "sft_lr_warmup":
        assert len(loaded.points) == 4
    if name == "sft_system_messages":
        assert [p.overrides for p in loaded.points] == [{"data.system_messages_per_instruction": k} for k in (1, 2, 3)]


def test_local_children_get_the_distributed_environment():
    base = {
        "XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8",
        "PATH": "/usr/bin",
        "JANUS_PROCESS_ID": "7",
    }
    env = local.child_env(base, coordinator="127.0.0.1:1234", processes=2, process_id=1, devices_per_process=4)
    assert env["JANUS_COORDINATOR_ADDRESS"] == "127.0.0.1:1234"
    assert (env["JANUS_NUM_PROCESSES"], env["JANUS_PROCESS_ID"]) == ("2", "1")
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=4"
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    single = local.child_env(base, coordinator="127.0.0.1:1", processes=1, process_id=0, devices_per_process=8)
    assert not any(k.startswith("JANUS_") for k in single)  # one process is a plain run
    assert local.default_devices_per_process(2) == 4 and local.default_devices_per_process(3) == 2
