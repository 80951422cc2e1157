"""`janus-train --config=configs/sft.py:tiny --workdir=DIR [--config.KEY=VALUE ...]`.

The same command runs on a laptop, every worker of a TPU pod, or every task of a SLURM job;
launch/ only sets the environment that `initialize_distributed()` reads.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from janus_jax.cli.config import ConfigError, config_args, resolve_config
from janus_jax.paths import StorageUnavailable, check_writable


def parse_run_args(
    prog: str,
    argv: list[str] | None,
    description: str,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> tuple[argparse.Namespace, object]:
    """(`--workdir` and other named flags, the resolved run config) of a program that takes a run config;
    `extra` adds the program's own flags."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--config", required=True, metavar="FILE:PRESET", help="e.g. configs/sft.py:tiny")
    parser.add_argument("--workdir", help="checkpoints, metrics.jsonl, manifest.json")
    cfg_args, rest = config_args(argv)
    args = parser.parse_args([*(a for a in cfg_args if not a.startswith("--config.")), *rest])
    try:
        return args, resolve_config(cfg_args)
    except ConfigError as err:
        parser.exit(2, f"{prog}: {err}\n")


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_run_args("janus-train", argv, "Train (or resume) one run in a workdir.")
    if not args.workdir:
        print("janus-train: --workdir is required", file=sys.stderr)
        return 2
    try:
        check_writable(args.workdir)  # a gs:// workdir that cannot be written fails before compiling anything
    except StorageUnavailable as error:
        print(f"janus-train: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("janus_jax").setLevel(logging.INFO)
    from janus_jax.train.trainer import train

    final = train(cfg, args.workdir)
    if final:
        shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in final.items()}
        print(f"finished: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
