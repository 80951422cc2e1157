"""GPU clusters under SLURM: one sbatch script, one JAX process per node.

The script derives what ``janus_jax.sharding.initialize_distributed()`` reads from SLURM's own
variables: the coordinator is the first host of the allocation (``scontrol show hostnames``) on a port
derived from the job id, the process count is ``SLURM_NTASKS`` and each task's id is its
``SLURM_PROCID``. The job command is the same one that runs on a laptop.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlurmTarget:
    nodes: int
    gpus_per_node: int
    job_name: str = "janus"
    partition: str | None = None
    time: str | None = None

    def __post_init__(self):
        if self.nodes < 1:
            raise ValueError(f"--nodes must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 1:
            raise ValueError(f"--gpus-per-node must be >= 1, got {self.gpus_per_node}")


def sbatch_script(target: SlurmTarget, job_argv: Sequence[str], *, root: Path, venv: Path, log_dir: Path) -> str:
    """The complete sbatch script for ``job_argv`` (run from ``root`` with ``venv`` activated)."""
    directives = [
        f"--job-name={target.job_name}",
        f"--nodes={target.nodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-node={target.gpus_per_node}",
        f"--output={log_dir}/slurm-%j.out",
    ]
    if target.partition:
        directives.append(f"--partition={target.partition}")
    if target.time:
        directives.append(f"--time={target.time}")
    task = f'export JANUS_PROCESS_ID="$SLURM_PROCID"; exec {shlex.join(job_argv)}'
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        "# One JAX process per node, each driving its node's GPUs.",
        "set -euo pipefail",
        f"cd {shlex.quote(str(root))}",
        f"source {shlex.quote(str(venv))}/bin/activate",
        'COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'export JANUS_COORDINATOR_ADDRESS="${COORDINATOR_HOST}:$((20000 + SLURM_JOB_ID % 20000))"',
        'export JANUS_NUM_PROCESSES="$SLURM_NTASKS"',
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(task)}",
    ]
    return "\n".join(lines) + "\n"


def submit(script: str, script_path: Path) -> tuple[int, str]:
    """Write the script and ``sbatch`` it; return (exit code, job id or error text)."""
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(script)
    try:
        result = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return 127, "sbatch not found: run this on a SLURM login node"
    if result.returncode != 0:
        return result.returncode, result.stderr.strip() or result.stdout.strip()
    return 0, result.stdout.strip().split(";")[0]


def run_slurm(
    target: SlurmTarget, job_argv: Sequence[str], *, root: Path, venv: Path, log_dir: Path, dry_run: bool
) -> int:
    """Print (``dry_run``) or write and submit the sbatch script for ``job_argv``."""
    script = sbatch_script(target, job_argv, root=root, venv=venv, log_dir=log_dir)
    if dry_run:
        print(script, end="")
        return 0
    log_dir.mkdir(parents=True, exist_ok=True)
    script_path = log_dir / f"{target.job_name}.sbatch"
    code, detail = submit(script, script_path)
    if code != 0:
        print(f"[launch] sbatch failed ({code}): {detail}", file=sys.stderr)
        return code
    print(f"[launch] submitted SLURM job {detail} ({script_path}); log: {log_dir}/slurm-{detail}.out")
    return 0
