"""The DPO reference model, in either of two modes.

- `model`: a frozen copy of the initial policy (bf16 by default), outside the optimizer, evaluated
  in the same jitted step under stop_gradient.
- `precomputed`: reference log-probs computed once (`janus-precompute-ref`, janus_jax/train/precompute.py)
  and stored in the run's workdir with content hashes of model + data; a file whose hash does not match
  is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from janus_jax.objectives.base import pair_logps
from janus_jax.paths import to_path, write_atomic
from janus_jax.sharding import host_copy

log = logging.getLogger(__name__)


def params_hash(params) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes (gathered across hosts)."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda x: jax.tree_util.keystr(x[0])):
        arr = host_copy(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def default_path(workdir: str | os.PathLike) -> epath.Path:
    """Where a run's precomputed reference log-probs live by default: in the run's own workdir."""
    return to_path(workdir) / "reference_logps.npz"


def frozen_copy(params, dtype: str):
    """A fresh copy (never aliasing the donated policy buffers) in the reference dtype."""
    return jax.jit(lambda p: jax.tree.map(lambda x: jnp.array(x, dtype=dtype, copy=True), p))(params)


class PrecomputedReference:
    """Adds `ref_chosen_logps` / `ref_rejected_logps` to each batch by looking up `pair_ids`."""

    def __init__(self, path: str | os.PathLike, split: str, pipeline, expected: dict):
        path = to_path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no precomputed reference log-probs; run janus-precompute-ref first")
        with path.open("rb") as f, np.load(f) as z:
            meta = json.loads(str(z["meta"]))
            for key in ("model_hash", f"{split}_data_hash"):
                if key not in meta:
                    raise ValueError(
                        f"{path}: has no {key}: it was made for a run without this {split} split; "
                        "rerun janus-precompute-ref with this config"
                    )
                if meta[key] != expected[key]:
                    raise ValueError(
                        f"{path}: {key} {meta[key][:12]} does not match this run's {expected[key][:12]}; "
                        "the file was made for another model or dataset (rerun janus-precompute-ref)"
                    )
            self.chosen = np.asarray(z[f"{split}_chosen"])
            self.rejected = np.asarray(z[f"{split}_rejected"])
        n = len(pipeline.chosen)
        if len(self.chosen) != n or len(self.rejected) != n:
            raise ValueError(
                f"{path}: {split} holds {len(self.chosen)} chosen / {len(self.rejected)} rejected reference "
                f"log-probs but the {split} data has {n} pairs"
            )
        check_finite(self.chosen, self.rejected, pipeline, f"{path} ({split})")
        self.pipeline = pipeline
        self.steps_per_epoch = pipeline.steps_per_epoch
        self.total_steps = pipeline.total_steps

    def batch(self, step: int) -> dict[str, np.ndarray]:
        b = self.pipeline.batch(step)
        ids = b["pair_ids"]
        if ids.max(initial=0) >= len(self.chosen):
            raise ValueError(f"pair id {int(ids.max())} is beyond the {len(self.chosen)} rows of the reference file")
        b["ref_chosen_logps"] = self.chosen[ids].astype(np.float32)
        b["ref_rejected_logps"] = self.rejected[ids].astype(np.float32)
        return b


def check_finite(chosen: np.ndarray, rejected: np.ndarray, pipeline, where: str) -> None:
    """Refuse reference log-probs with missing (NaN) or infinite entries, naming the data rows and their count."""
    bad = np.flatnonzero(~(np.isfinite(chosen) & np.isfinite(rejected)))
    if len(bad):
        rows = pipeline.chosen.rows[bad].tolist()
        shown = ", ".join(map(str, rows[:20])) + (", ..." if len(rows) > 20 else "")
        raise ValueError(
            f"{where}: {len(bad)} of {len(chosen)} pairs have no finite reference log-prob (data rows {shown}); "
            "rerun janus-precompute-ref"
        )


def compute_logps(run, params, pipeline) -> tuple[np.ndarray, np.ndarray]:
    """One pass over a pair pipeline: summed response log-probs of chosen and rejected, by pair id.

    Every host gathers the whole global batch (log-probs, pair ids, weights), so each ends up with
    every pair's values, whichever host's shard of the data the pair came from.
    """
    n = len(pipeline.chosen)
    chosen, rejected = np.full(n, np.nan, np.float64), np.full(n, np.nan, np.float64)

    @jax.jit
    def logps(p, batch):
        (c, r), _ = pair_logps(nnx.merge(run.graphdef, p), batch)
        return c, r

    for step in range(pipeline.epoch_steps[0]):
        batch = run.global_batch(pipeline.batch(step))
        c, r = logps(params, batch)
        c, r, ids, weights = (host_copy(x) for x in (c, r, batch["pair_ids"], batch["pair_weights"]))
        keep = weights > 0
        chosen[ids[keep]], rejected[ids[keep]] = c[keep], r[keep]
    return chosen, rejected


def write(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Process 0 writes; the file appears only when complete, so a kill leaves no torn file."""
    if jax.process_index() != 0:
        return
    buffer = io.BytesIO()  # a file object: np.savez would append ".npz" to other names
    np.savez(buffer, meta=json.dumps(meta), **arrays)
    write_atomic(path, buffer.getvalue())
    log.info("wrote reference log-probs of %s to %s", {k: len(v) for k, v in arrays.items()}, path)


def data_hash(pipeline) -> str:
    return hashlib.sha256((pipeline.chosen.fingerprint() + pipeline.rejected.fingerprint()).encode()).hexdigest()
