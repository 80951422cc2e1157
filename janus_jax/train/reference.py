"""The DPO reference model, in either of two modes.

- `model`: a frozen copy of the initial policy (bf16 by default), outside the optimizer, evaluated
  in the same jitted step under stop_gradient.
- `precomputed`: reference log-probs computed once (`janus-precompute-ref`) and stored beside the
  data with a content hash of model + data; a file whose hash does not match is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

log = logging.getLogger(__name__)


def params_hash(params) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes (gathered across hosts)."""
    from janus_jax.hf_io import _host_copy

    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda x: jax.tree_util.keystr(x[0])):
        arr = _host_copy(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def default_path(data_source: str) -> Path:
    return Path(str(data_source) + ".ref_logps.npz")


def frozen_copy(params, dtype: str):
    """A fresh copy (never aliasing the donated policy buffers) in the reference dtype."""
    return jax.jit(lambda p: jax.tree.map(lambda x: jnp.array(x, dtype=dtype, copy=True), p))(params)


class PrecomputedReference:
    """Adds `ref_chosen_logps` / `ref_rejected_logps` to each batch by looking up `pair_ids`."""

    def __init__(self, path: Path, split: str, pipeline, expected: dict):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no precomputed reference log-probs; run janus-precompute-ref first")
        with np.load(path) as z:
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


def compute_logps(graphdef, params, pipeline, mesh) -> tuple[np.ndarray, np.ndarray]:
    """One pass over a pair pipeline: summed response log-probs of chosen and rejected, by pair id.

    Every host gathers the whole global batch (log-probs, pair ids, weights), so each ends up with
    every pair's values, whichever host's shard of the data the pair came from.
    """
    from janus_jax.hf_io import _host_copy
    from janus_jax.train.tasks import pair_logps
    from janus_jax.train.trainer import _global_batch

    n = len(pipeline.chosen)
    chosen, rejected = np.full(n, np.nan, np.float64), np.full(n, np.nan, np.float64)

    @jax.jit
    def logps(p, batch):
        (c, r), _ = pair_logps(nnx.merge(graphdef, p), batch)
        return c, r

    for step in range(pipeline.epoch_steps[0]):
        batch = _global_batch(pipeline.batch(step), mesh)
        c, r = logps(params, batch)
        c, r, ids, weights = (_host_copy(x) for x in (c, r, batch["pair_ids"], batch["pair_weights"]))
        keep = weights > 0
        chosen[ids[keep]], rejected[ids[keep]] = c[keep], r[keep]
    return chosen, rejected


def precompute(cfg, out: Path | None = None) -> Path:
    """Write the reference log-probs of cfg's data under cfg's init model, with their hashes."""
    from janus_jax.sharding import make_mesh, state_shardings
    from janus_jax.train import data_setup
    from janus_jax.train.trainer import _initial_params, build_module, model_config

    mesh = make_mesh(tuple(cfg.mesh.shape))
    mcfg = model_config(cfg)
    data = data_setup.build(cfg, mcfg)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_module(cfg, mcfg, nnx.Rngs(0))), nnx.Param)
    params = _initial_params(cfg, mcfg, state_shardings(abstract, mesh), mesh)
    arrays: dict[str, np.ndarray] = {}
    meta = {"model_hash": params_hash(params), "init_from": cfg.model.init_from}
    for split, pipeline in (("train", data.train), ("eval", data.eval)):
        if pipeline is None:
            continue
        arrays[f"{split}_chosen"], arrays[f"{split}_rejected"] = compute_logps(graphdef, params, pipeline, mesh)
        meta[f"{split}_data_hash"] = data_hash(pipeline)
        check_finite(arrays[f"{split}_chosen"], arrays[f"{split}_rejected"], pipeline, f"precompute ({split})")
    path = Path(out) if out else default_path(cfg.data.source)
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")  # renamed when complete: a kill leaves no torn file
        with partial.open("wb") as f:  # a file object: np.savez would append ".npz" to other names
            np.savez(f, meta=json.dumps(meta), **arrays)
        partial.replace(path)
        log.info("wrote reference log-probs of %s to %s", {k: len(v) for k, v in arrays.items()}, path)
    return path


def data_hash(pipeline) -> str:
    return hashlib.sha256((pipeline.chosen.fingerprint() + pipeline.rejected.fingerprint()).encode()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    """`janus-precompute-ref --config=configs/dpo.py:PRESET [--config.KEY=VALUE ...] [--out=FILE]`."""
    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "DPO run config (configs/dpo.py:PRESET)", lock_config=True)
    out = flags.DEFINE_string("out", None, "output .npz (default: beside the data, <source>.ref_logps.npz)")

    def run(args):
        del args
        logging.getLogger("janus_jax").setLevel(logging.INFO)
        from janus_jax.sharding import initialize_distributed

        initialize_distributed()
        print(f"wrote {precompute(config.value, Path(out.value) if out.value else None)}")

    flags.mark_flags_as_required(["config"])
    app.run(run, argv=argv)
