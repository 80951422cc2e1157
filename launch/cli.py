"""``python -m launch run|sweep|collect``: one command from laptop to TPU pod or GPU cluster.

    python -m launch run --target local --processes 2 -- janus-train --config=configs/sft.py:tiny --workdir=runs/x
    python -m launch run --target tpu --name POD --zone ZONE [--accelerator-type v5e-64 --queued] -- janus-train ...
    python -m launch run --target slurm --nodes 2 --gpus-per-node 8 [--dry-run] -- janus-train ...
    python -m launch sweep configs/sweeps/sft_lr_warmup.py --target local [--sweep-dir DIR]
    python -m launch collect runs/sweeps/sft_lr_warmup

Everything the launcher can check (target options, config keys and values, workdir ownership) is
checked before anything starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from janus_jax.paths import is_url
from launch.collect import main_collect
from launch.job import Job, JobError, preflight
from launch.local import run_local
from launch.slurm import SlurmTarget, run_slurm
from launch.sweep import DEFAULT_PROGRAM, SweepError, load_sweep, run_sweep
from launch.tpu import TpuTarget, run_tpu

TARGETS = ("local", "tpu", "slurm")
_TARGET_OPTIONS = {
    "local": ("processes", "devices_per_process", "log_dir"),
    "tpu": (
        "name",
        "zone",
        "project",
        "python",
        "accelerator_type",
        "runtime_version",
        "queued",
        "spot",
        "max_restarts",
    ),
    "slurm": ("nodes", "gpus_per_node", "partition", "time", "job_name", "venv"),
}
_REQUIRED = {"tpu": ("name", "zone"), "slurm": ("nodes", "gpus_per_node")}


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, choices=TARGETS, help="where the job runs")
    parser.add_argument("--dry-run", action="store_true", help="print what would run (tpu, slurm: every command)")
    local = parser.add_argument_group("--target local")
    local.add_argument("--processes", type=int, help="number of JAX processes (default 1)")
    local.add_argument("--devices-per-process", type=int, help="fake CPU devices each (default 8 / processes)")
    local.add_argument(
        "--log-dir", help="per-process logs (default WORKDIR/logs; runs/launch-logs/NAME for a gs:// workdir)"
    )
    tpu = parser.add_argument_group("--target tpu")
    tpu.add_argument("--name", help="TPU VM (pod) name")
    tpu.add_argument("--zone", help="its zone, e.g. us-central2-b")
    tpu.add_argument("--project", help="Google Cloud project (default: gcloud's)")
    tpu.add_argument("--python", help="Python 3.11 interpreter on the workers (default python3.11)")
    tpu.add_argument("--accelerator-type", help="create the TPU when absent, e.g. v5litepod-64 (or v5e-64), v4-32")
    tpu.add_argument("--runtime-version", help="TPU software version (default: by accelerator family)")
    tpu.add_argument("--queued", action="store_true", default=None, help="get the TPU through a queued resource")
    tpu.add_argument("--spot", action="store_true", default=None, help="spot capacity (preemptible; reruns resume)")
    tpu.add_argument("--max-restarts", type=int, help="reruns after a preemption or failed worker (default 3)")
    slurm = parser.add_argument_group("--target slurm")
    slurm.add_argument("--nodes", type=int, help="nodes (one JAX process each)")
    slurm.add_argument("--gpus-per-node", type=int, help="GPUs per node")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time", help="time limit, e.g. 24:00:00")
    slurm.add_argument("--job-name", help="SLURM job name (default janus, or the sweep point's name)")
    slurm.add_argument("--venv", help="virtual environment to activate (default ./.venv)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run one job", usage="python -m launch run --target {local,tpu,slurm} [options] -- COMMAND ..."
    )
    _add_target_options(run)
    sweep = commands.add_parser(
        "sweep",
        help="run or submit every point of a sweep file",
        usage="python -m launch sweep SWEEP_FILE --target {local,tpu,slurm} [options] [-- PROGRAM ...]",
        epilog="PROGRAM (default janus-train) gets --config=BASE --workdir=SWEEP_DIR/POINT and the point's overrides",
    )
    sweep.add_argument("sweep_file", help="e.g. configs/sweeps/sft_lr_warmup.py")
    sweep.add_argument("--sweep-dir", help="one workdir per point under it (default runs/sweeps/NAME)")
    _add_target_options(sweep)
    collect = commands.add_parser("collect", help="final/best metrics of a sweep as Markdown, CSV and a plot")
    collect.add_argument("sweep_dir")
    return parser


def _check_target_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for target, names in _TARGET_OPTIONS.items():
        if target == args.target:
            continue
        for name in names:
            if getattr(args, name) is not None:
                parser.error(f"--{name.replace('_', '-')} applies to --target {target}, not --target {args.target}")
    for name in _REQUIRED.get(args.target, ()):
        if getattr(args, name) is None:
            parser.error(f"--target {args.target} needs --{name.replace('_', '-')}")
    for name in ("processes", "devices_per_process", "nodes", "gpus_per_node"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.max_restarts is not None and args.max_restarts < 0:
        parser.error(f"--max-restarts must be >= 0, got {args.max_restarts}")


def local_log_dir(workdir: str | os.PathLike | None) -> Path:
    """Where a local job's process logs go: WORKDIR/logs, or runs/launch-logs/NAME for a gs:// workdir (the
    logs are files the processes append to; pathlib would put them in a local folder named `gs:`)."""
    if not workdir:
        return Path("runs") / "launch-logs"
    if is_url(workdir):
        return Path("runs") / "launch-logs" / os.fspath(workdir).rstrip("/").rsplit("/", 1)[-1]
    return Path(workdir) / "logs"


def make_launcher(args: argparse.Namespace) -> Callable[[list[str], Path | None, str | None], int]:
    """A function running one job argv on the chosen target: (argv, workdir, name) -> exit code."""
    root = Path.cwd()
    if args.target == "local":

        def launch_local(argv, workdir, name):
            log_dir = args.log_dir or local_log_dir(workdir)
            if args.dry_run:
                print(f"[dry-run] {args.processes or 1} local process(es): {' '.join(argv)}")
                return 0
            return run_local(
                argv, processes=args.processes or 1, devices_per_process=args.devices_per_process, log_dir=log_dir
            )

        return launch_local
    if args.target == "tpu":
        target = TpuTarget(
            name=args.name,
            zone=args.zone,
            project=args.project,
            python=args.python or "python3.11",
            accelerator_type=args.accelerator_type,
            runtime_version=args.runtime_version,
            queued=bool(args.queued),
            spot=bool(args.spot),
            max_restarts=3 if args.max_restarts is None else args.max_restarts,
        )
        return lambda argv, workdir, name: run_tpu(target, argv, root=root, dry_run=args.dry_run)

    venv = Path(args.venv).absolute() if args.venv else root / ".venv"

    def launch_slurm(argv, workdir, name):
        target = SlurmTarget(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            job_name=args.job_name or name or "janus",
            partition=args.partition,
            time=args.time,
        )
        log_dir = (Path(workdir) / "slurm" if workdir and not is_url(workdir) else root / "runs" / "slurm").absolute()
        return run_slurm(target, argv, root=root, venv=venv, log_dir=log_dir, dry_run=args.dry_run)

    return launch_slurm


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    own, command = _split_command(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(own)
    if args.command == "collect":
        if command:
            parser.error("collect takes no command after '--'")
        return main_collect(args.sweep_dir)
    _check_target_options(parser, args)
    launcher = make_launcher(args)
    if args.command == "run":
        job = Job(tuple(command))
        try:
            preflight(job, check_local_workdir=args.target != "tpu" and not args.dry_run)
        except JobError as err:
            print(f"launch: refused, nothing was started: {err}", file=sys.stderr)
            return 2
        return launcher(list(command), job.workdir, None)
    try:
        sweep = load_sweep(args.sweep_file)
        return run_sweep(
            sweep,
            sweep_dir=args.sweep_dir or Path("runs") / "sweeps" / sweep.name,  # a gs:// URL stays one
            launch_point=launcher,
            target=args.target,
            program=command or DEFAULT_PROGRAM,
            submits=args.target == "slurm",
            dry_run=args.dry_run,
        )
    except SweepError as err:
        print(f"launch: {err}", file=sys.stderr)
        return 2
