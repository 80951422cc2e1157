"""`janus-train --config=configs/sft.py:tiny --workdir=DIR [--config.KEY=VALUE ...]`.

The same command runs on a laptop, every worker of a TPU pod, or every task of a SLURM job;
launch/ only sets the environment that `initialize_distributed()` reads.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Run config: configs/FILE.py:PRESET (e.g. configs/sft.py:tiny).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, manifest.json.")


def _run(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep library chatter (orbax, XLA) out of the way
    logging.getLogger("janus_jax").setLevel(logging.INFO)
    from janus_jax.train.trainer import train

    final = train(_CONFIG.value, _WORKDIR.value)
    if final:
        shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in final.items()}
        print(f"finished: {shown}")


def main() -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(_run)


if __name__ == "__main__":
    main()
