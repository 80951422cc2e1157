"""Cloud TPU pods: get the TPU (reuse, create, or queue for it), install this checkout on every worker,
run the same command on all of them, and rerun it after a preemption or a failed worker.

Nothing is set for distributed start-up: on a pod ``jax.distributed.initialize()`` reads everything from
the TPU metadata, so the job's own code is the same as on a laptop. A rerun resumes from the last
checkpoint in the job's workdir (a ``gs://`` bucket: a pod has no shared disk and a recreated TPU has an
empty one), as MaxText and xpk jobs do. The steps are plain ``gcloud compute tpus`` commands, printed by
``--dry-run`` exactly as they would run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REMOTE_DIR = "janus-jax"
ARCHIVE_NAME = "janus-jax-src.tar.gz"
PID_FILE = "~/janus-job.pid"
LOG_FILE = "~/janus-job.log"
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "workdirs", "build", "dist"}

# TPU software versions (the VM image) for each accelerator family, from the Cloud TPU docs.
RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
_WORKER_ID = (
    "curl -s -H Metadata-Flavor:Google "
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number"
)
# A queued resource is ready when ACTIVE; these states mean it is gone and must be queued again.
_QUEUED_LOST = {"SUSPENDING", "SUSPENDED", "FAILED"}
_VM_LOST = {"PREEMPTED", "TERMINATED", "STOPPED", "STOPPING"}

# (command, capture stdout?) -> (exit code, stdout); tests inject a fake one.
Runner = Callable[[list[str], bool], tuple[int, str]]


def cloud_accelerator_type(name: str) -> str:
    """The cloud's accelerator type: `v5e-64` is spelled `v5litepod-64` there; other names pass through."""
    return "v5litepod-" + name.split("-", 1)[1] if name.startswith("v5e-") else name


def default_runtime_version(accelerator_type: str) -> str:
    family = accelerator_type.rsplit("-", 1)[0]
    if family not in RUNTIME_VERSIONS:
        raise ValueError(
            f"no default TPU software version for accelerator type {accelerator_type!r} "
            f"(known: {', '.join(f'{k}-N' for k in RUNTIME_VERSIONS)}); pass --runtime-version"
        )
    return RUNTIME_VERSIONS[family]


@dataclass(frozen=True)
class TpuTarget:
    """A TPU VM (or a queued resource of the same name) and how to (re)create it."""

    name: str
    zone: str
    project: str | None = None
    python: str = "python3.11"
    accelerator_type: str | None = None  # e.g. v5litepod-64; None: the TPU must exist already
    runtime_version: str | None = None  # default: by accelerator family
    queued: bool = False  # ask for capacity through a queued resource (waits until it is granted)
    spot: bool = False
    max_restarts: int = 3

    def gcloud(self, *args: str) -> list[str]:
        command = ["gcloud", "compute", "tpus", *args, f"--zone={self.zone}"]
        if self.project:
            command.append(f"--project={self.project}")
        return command

    def on_workers(self, script: str, worker: str = "all") -> list[str]:
        return self.gcloud("tpu-vm", "ssh", self.name, f"--worker={worker}", f"--command={script}")

    # ---- the TPU itself --------------------------------------------------------------------------
    def describe(self) -> list[str]:
        if self.queued:
            return self.gcloud("queued-resources", "describe", self.name, "--format=value(state.state)")
        return self.gcloud("tpu-vm", "describe", self.name, "--format=value(state)")

    def create(self) -> list[str]:
        if self.accelerator_type is None:
            raise ValueError(f"TPU {self.name!r} does not exist in {self.zone}; give --accelerator-type to create it")
        kind = cloud_accelerator_type(self.accelerator_type)
        version = self.runtime_version or default_runtime_version(kind)
        spot = ["--spot"] if self.spot else []
        if self.queued:
            return self.gcloud(
                "queued-resources", "create", self.name, f"--node-id={self.name}", f"--accelerator-type={kind}",
                f"--runtime-version={version}", *spot,
            )  # fmt: skip
        return self.gcloud("tpu-vm", "create", self.name, f"--accelerator-type={kind}", f"--version={version}", *spot)

    def delete(self) -> list[str]:
        if self.queued:  # --force deletes the TPU VM it holds too
            return self.gcloud("queued-resources", "delete", self.name, "--force", "--quiet")
        return self.gcloud("tpu-vm", "delete", self.name, "--quiet")

    def is_ready(self, state: str) -> bool:
        return state == ("ACTIVE" if self.queued else "READY")

    def is_lost(self, state: str) -> bool:
        return state in (_QUEUED_LOST if self.queued else _VM_LOST)


def setup_script(python: str) -> str:
    """Unpack the copied source and install it (pinned JAX stack with TPU support) into a venv."""
    return (
        f"set -e; (command -v {python} >/dev/null || (sudo apt-get update -q && "
        f"sudo apt-get install -y -q {python} {python}-venv)); "
        f"mkdir -p ~/{REMOTE_DIR} && tar -xzf ~/{ARCHIVE_NAME} -C ~/{REMOTE_DIR} && cd ~/{REMOTE_DIR} && "
        f"(test -x .venv/bin/python || {python} -m venv .venv) && "
        ".venv/bin/python -m pip install -q --upgrade pip && "
        ".venv/bin/python -m pip install -q -e '.[tpu]'"
    )


def stop_script() -> str:
    """End the previous attempt's job on a worker (its whole process group), which would hold the TPU."""
    return (
        f"if [ -f {PID_FILE} ]; then kill -TERM -- -$(cat {PID_FILE}) 2>/dev/null; "
        f"for i in $(seq 60); do kill -0 -- -$(cat {PID_FILE}) 2>/dev/null || break; sleep 1; done; "
        f"kill -KILL -- -$(cat {PID_FILE}) 2>/dev/null; rm -f {PID_FILE}; fi; true"
    )


def run_script(job_argv: Sequence[str]) -> str:
    """Run the job on a worker: worker 0 streams its output here (and keeps it in ~/janus-job.log), the
    others write only that file. The shell's process group is recorded so a rerun can end it."""
    job = shlex.join(job_argv)
    return (
        f"cd ~/{REMOTE_DIR} && source .venv/bin/activate && echo $$ > {PID_FILE} && "
        f'W=$({_WORKER_ID} || echo 0); if [ "$W" = 0 ]; then {job} 2>&1 | tee {LOG_FILE}; exit ${{PIPESTATUS[0]}}; '
        f"else {job} > {LOG_FILE} 2>&1; fi"
    )


def install_commands(target: TpuTarget, archive: str | os.PathLike) -> list[list[str]]:
    """Copy the source archive to every worker and install it there."""
    return [
        target.gcloud("tpu-vm", "scp", os.fspath(archive), f"{target.name}:{ARCHIVE_NAME}", "--worker=all"),  # into ~
        target.on_workers(setup_script(target.python)),
    ]


def job_commands(target: TpuTarget, job_argv: Sequence[str]) -> list[list[str]]:
    """End any earlier attempt, then run the job on all workers."""
    return [target.on_workers(stop_script()), target.on_workers(run_script(job_argv))]


def source_files(root: Path) -> list[Path]:
    """Files of the checkout to ship: what git tracks plus untracked, non-ignored files (else a walk)."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
        return [root / n for n in names if (root / n).is_file()]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        files.extend(Path(dirpath) / f for f in filenames)
    return files


def make_source_archive(root: Path, destination: Path) -> Path:
    with tarfile.open(destination, "w:gz") as archive:
        for path in source_files(root):
            archive.add(path, arcname=path.relative_to(root).as_posix())
    return destination


def subprocess_runner(command: list[str], capture: bool) -> tuple[int, str]:
    """Run a gcloud command; its output streams through unless it is captured (state queries)."""
    print(f"[launch] {shlex.join(command)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, check=False, capture_output=capture, text=True)
    except FileNotFoundError as e:
        raise RuntimeError("gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk)") from e
    return done.returncode, (done.stdout or "").strip() if capture else ""


def print_dry_run(target: TpuTarget, job_argv: Sequence[str], root: Path) -> None:
    """Every command of a first attempt, in order, with what decides whether it runs."""
    print(f"# {ARCHIVE_NAME}: git-tracked and untracked non-ignored files of {root}")
    ready = "ACTIVE" if target.queued else "READY"
    print(f"# 1. the TPU: reused when its state is {ready}, else (re)created" + (" and waited for" * target.queued))
    print(shlex.join(target.describe()))
    if target.accelerator_type is not None:
        print(shlex.join(target.create()))
    print("# 2. this checkout, installed on every worker (again after each re-creation)")
    for command in install_commands(target, ARCHIVE_NAME):
        print(shlex.join(command))
    print(
        f"# 3. the job on every worker, worker 0's log streamed here; after a preemption or a failed worker "
        f"the TPU is checked (1.) and the job rerun, up to {target.max_restarts} times, resuming from the "
        "workdir's last checkpoint"
    )
    for command in job_commands(target, job_argv):
        print(shlex.join(command))


class TpuSession:
    """The loop: get the TPU ready, install, run; after a failure, recreate what was lost and rerun."""

    def __init__(self, target: TpuTarget, runner: Runner, sleep: Callable[[float], None], poll_seconds: float):
        self.target, self.runner, self.sleep, self.poll_seconds = target, runner, sleep, poll_seconds

    def state(self) -> str | None:
        """The TPU's state, None when it does not exist."""
        code, out = self.runner(self.target.describe(), True)
        return out.strip().splitlines()[-1] if code == 0 and out.strip() else None

    def ensure_ready(self) -> bool:
        """Wait until the TPU is ready, creating it (again) when absent or lost; True if it was (re)created."""
        created = False
        last = ""
        while True:
            state = self.state()
            if state is not None and self.target.is_ready(state):
                return created
            if state is not None and self.target.is_lost(state):
                _say(f"TPU {self.target.name} is {state}: deleting it to create it again")
                self._must(self.target.delete())
                state = None
            if state is None:
                _say(f"creating TPU {self.target.name}")
                self._must(self.target.create())
                created = True
                if not self.target.queued:
                    continue  # `tpu-vm create` returns once the VM is up
            elif state != last:
                _say(f"TPU {self.target.name} is {state}; waiting for it to be ready")
            last = state or ""
            self.sleep(self.poll_seconds)

    def _must(self, command: list[str]) -> None:
        code, _ = self.runner(command, False)
        if code != 0:
            raise RuntimeError(f"command failed with exit code {code}: {shlex.join(command)}")

    def run(self, job_argv: Sequence[str], archive: Path) -> int:
        installed = False
        for attempt in range(self.target.max_restarts + 1):
            if self.ensure_ready() or not installed:
                for command in install_commands(self.target, archive):
                    self._must(command)
                installed = True
            stop, job = job_commands(self.target, job_argv)
            self.runner(stop, False)
            code, _ = self.runner(job, False)
            if code == 0:
                return 0
            if attempt == self.target.max_restarts:
                _say(f"job failed (exit code {code}) after {attempt} reruns; giving up")
                return code
            _say(
                f"job exited with code {code} (TPU state: {self.state() or 'gone'}); rerun {attempt + 1} of "
                f"{self.target.max_restarts}, resuming from the workdir's last checkpoint"
            )
        return 1  # unreachable: the loop returns


def _say(message: str) -> None:
    print(f"[launch] {message}", file=sys.stderr, flush=True)


def run_tpu(
    target: TpuTarget,
    job_argv: Sequence[str],
    *,
    root: Path,
    dry_run: bool,
    runner: Runner = subprocess_runner,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = 60.0,
) -> int:
    """Run the job on every worker of the pod until it succeeds or the reruns are spent; with ``dry_run``
    only print the commands."""
    if dry_run:
        print_dry_run(target, job_argv, root)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = make_source_archive(root, Path(tmp) / ARCHIVE_NAME)
        try:
            return TpuSession(target, runner, sleep, poll_seconds).run(job_argv, archive)
        except (RuntimeError, ValueError) as e:
            _say(str(e))
            return 1
