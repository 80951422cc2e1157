"""`janus-precompute-ref --config=configs/dpo.py:PRESET --workdir=RUN [--config.KEY=VALUE ...] [--out=FILE]`.

Computes the reference policy's log-probs of the run's data once; the DPO run in the same workdir with
`--config.dpo.reference=precomputed` reads them (hashes of model and data checked).
"""

from __future__ import annotations

import logging
import sys

from janus_jax.cli.train import parse_run_args


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_run_args(
        "janus-precompute-ref",
        argv,
        "Reference log-probs for a DPO run, computed once.",
        extra=lambda p: p.add_argument("--out", help="file to write (default: <workdir>/reference_logps.npz)"),
    )
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("janus_jax").setLevel(logging.INFO)
    from janus_jax.sharding import initialize_distributed
    from janus_jax.train.precompute import precompute

    initialize_distributed()
    try:
        path = precompute(cfg, workdir=args.workdir, out=args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"janus-precompute-ref: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
