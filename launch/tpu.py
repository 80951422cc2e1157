"""Cloud TPU VM pods: copy this checkout to every worker, install it, run the same command everywhere.

Nothing is set for distributed start-up: on a pod ``jax.distributed.initialize()`` reads everything from
the TPU metadata, so the job's own code is the same as on a laptop. The steps are plain ``gcloud
compute tpus tpu-vm`` commands, printed by ``--dry-run`` exactly as they would run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REMOTE_DIR = "janus-jax"
ARCHIVE_NAME = "janus-jax-src.tar.gz"
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "workdirs", "build", "dist"}


@dataclass(frozen=True)
class TpuTarget:
    name: str
    zone: str
    project: str | None = None
    python: str = "python3.11"

    def gcloud(self, verb: str, *args: str) -> list[str]:
        command = ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, f"--zone={self.zone}"]
        if self.project:
            command.append(f"--project={self.project}")
        return command

    def on_all_workers(self, script: str) -> list[str]:
        return self.gcloud("ssh", self.name, "--worker=all", f"--command={script}")


def setup_script(python: str) -> str:
    """Unpack the copied source and install it (pinned JAX stack with TPU support) into a venv."""
    return (
        f"set -e; mkdir -p ~/{REMOTE_DIR} && tar -xzf ~/{ARCHIVE_NAME} -C ~/{REMOTE_DIR} && cd ~/{REMOTE_DIR} && "
        f"(test -x .venv/bin/python || {python} -m venv .venv) && "
        ".venv/bin/python -m pip install -q --upgrade pip && "
        ".venv/bin/python -m pip install -q -e '.[tpu]'"
    )


def run_script(job_argv: Sequence[str]) -> str:
    return f"cd ~/{REMOTE_DIR} && source .venv/bin/activate && {shlex.join(job_argv)}"


def tpu_commands(target: TpuTarget, job_argv: Sequence[str], archive: str | os.PathLike) -> list[list[str]]:
    """Copy the source archive to every worker, set up the environment there, run the job on all."""
    return [
        target.gcloud("scp", os.fspath(archive), f"{target.name}:{ARCHIVE_NAME}", "--worker=all"),  # into ~
        target.on_all_workers(setup_script(target.python)),
        target.on_all_workers(run_script(job_argv)),
    ]


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


def run_tpu(target: TpuTarget, job_argv: Sequence[str], *, root: Path, dry_run: bool) -> int:
    """Run the job on every worker of the pod; with ``dry_run`` only print the commands."""
    if dry_run:
        print(f"# {ARCHIVE_NAME}: git-tracked and untracked non-ignored files of {root}")
        for command in tpu_commands(target, job_argv, ARCHIVE_NAME):
            print(shlex.join(command))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = make_source_archive(root, Path(tmp) / ARCHIVE_NAME)
        for command in tpu_commands(target, job_argv, archive):
            print(f"[launch] {shlex.join(command)}", file=sys.stderr, flush=True)
            try:
                code = subprocess.run(command, check=False).returncode
            except FileNotFoundError:
                print("[launch] gcloud not found: install the Google Cloud CLI", file=sys.stderr)
                return 127
            if code != 0:
                return code
    return 0
