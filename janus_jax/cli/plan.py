"""`janus-plan --config=configs/FILE.py:PRESET [--config.KEY=VALUE ...] --targets=8xH100,v4-32,v5e-64`.

Will a training job fit in device memory? Each target's step is compiled ahead of time (janus_jax/plan.py).
"""

from __future__ import annotations

import json
import sys

from janus_jax.cli.train import parse_run_args
from janus_jax.plan import GIB, format_table, parse_target, plan_notes, plan_target


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_run_args(
        "janus-plan",
        argv,
        "Plan a training job's per-device memory before queuing it.",
        extra=lambda p: p.add_argument(
            "--targets", default="8xH100,v4-32,v5e-64", help="device pools, e.g. v4-32,v5e-64:1x16x4"
        ),
    )
    try:
        pools = [parse_target(t) for t in args.targets.split(",") if t.strip()]
    except ValueError as e:
        print(f"janus-plan: {e}", file=sys.stderr)
        return 2
    print(
        f"planning {cfg.objective} with model {cfg.model.preset}, seq {cfg.data.seq_len}, global batch "
        f"{cfg.train.global_batch_size}, remat {cfg.model.remat} (abstract: no weights are loaded)",
        flush=True,
    )
    rows = []
    for pool in pools:
        rows.append(plan_target(cfg, pool))
        r = rows[-1]
        detail = r.get("error") or (
            f"{r['total_bytes'] / GIB:.1f} GiB/device, compiled for {r['compiled_for']} in {r['compile_seconds']} s"
        )
        print(f"  {pool.name}: {r['status']} ({detail})", flush=True)
    print(format_table(rows))
    for note in plan_notes(rows):
        print(f"note: {note}")
    print(json.dumps({"config": f"{cfg.objective}/{cfg.model.preset}", "targets": rows}))
    return 1 if any(r["status"] == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
