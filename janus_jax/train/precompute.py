"""Reference log-probs computed once, before a DPO run, under the run's own construction (`build_run`)."""

from __future__ import annotations

import os

from etils import epath
from ml_collections import ConfigDict

from janus_jax.objectives import REGISTRY, get_objective
from janus_jax.paths import to_path
from janus_jax.train import reference
from janus_jax.train.run import build_run


def precompute(
    cfg: ConfigDict, workdir: str | os.PathLike | None = None, out: str | os.PathLike | None = None
) -> epath.Path:
    """Write the reference log-probs of cfg's data under cfg's init model, with their hashes.

    The file goes to `out`, else `dpo.reference_logps`, else `<workdir>/reference_logps.npz` (where the
    DPO run in that workdir looks for it); each may be local or `gs://`.
    """
    objective = get_objective(cfg.objective)
    if not objective.needs_reference:
        raise ValueError(f"objective={cfg.objective!r} uses no reference policy; precompute is for {_users()}")
    cfg = ConfigDict(cfg.to_dict())
    section = cfg[objective.config_section]
    path = out or section.reference_logps or (reference.default_path(workdir) if workdir else None)
    if path is None:
        raise ValueError("say where the reference log-probs go: --workdir (the DPO run's) or --out")
    section.reference = "model"  # this pass reads plain pair batches: it makes the log-probs
    run = build_run(cfg)
    params = run.initial_params()
    arrays = {}
    meta = {"model_hash": reference.params_hash(params), "init_from": cfg.model.init_from}
    for split, pipeline in (("train", run.data.train), ("eval", run.data.eval)):
        if pipeline is None:
            continue
        chosen, rejected = reference.compute_logps(run, params, pipeline)
        reference.check_finite(chosen, rejected, pipeline, f"precompute ({split})")
        arrays[f"{split}_chosen"], arrays[f"{split}_rejected"] = chosen, rejected
        meta[f"{split}_data_hash"] = reference.data_hash(pipeline)
    reference.write(path, meta, arrays)
    return to_path(path)


def _users() -> str:
    return ", ".join(name for name, o in REGISTRY.items() if o.needs_reference)
