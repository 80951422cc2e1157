"""Orbax checkpoints: async saves, keep the last K, exact resume, restore onto any mesh.

A checkpoint holds the train state (params, optimizer state, step) and a small JSON record of
the model config and data position. Restores go into ShapeDtypeStructs that carry concrete
shardings, so a run saved on one mesh restores onto another.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the project's layout (workdir/checkpoints)."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """`target`: a pytree of jax.ShapeDtypeStruct with the shardings to restore onto."""
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )
        return restored["state"], restored["meta"]

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_with_shardings(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def resolve_checkpoint_dir(path: str | Path) -> tuple[Path, int | None]:
    """Accept a workdir, its checkpoints/ folder, or one step folder; return (checkpoints dir, step)."""
    path = Path(path).absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    return path, None


def load_model(path: str | Path, *, mesh=None, step: int | None = None, param_dtype: str | None = None):
    """Restore the model (parameters only) of a training checkpoint, e.g. for serving or export."""
    from flax import nnx

    from janus_jax.model import Mistral, MistralConfig
    from janus_jax.sharding import make_mesh, state_shardings

    directory, found_step = resolve_checkpoint_dir(path)
    ckpt = Checkpointer(directory, async_save=False)
    step = step if step is not None else found_step if found_step is not None else ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {directory}")
    meta = ckpt.read_meta(step)
    cfg = MistralConfig(**meta["model_config"])
    if param_dtype:
        cfg = cfg.replace(param_dtype=param_dtype)
    mesh = mesh or make_mesh((1, -1, 1))
    stored_cfg = MistralConfig(**meta["model_config"])
    _, abstract = nnx.split(nnx.eval_shape(lambda: Mistral(stored_cfg, rngs=nnx.Rngs(0))))
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Mistral(cfg, rngs=nnx.Rngs(0))))
    shardings = state_shardings(abstract, mesh)
    restored = ocp.PyTreeCheckpointer().restore(
        directory / str(step) / "state",
        args=ocp.args.PyTreeRestore(
            item={"params": abstract_with_shardings(abstract, shardings)},
            restore_args={
                "params": ocp.checkpoint_utils.construct_restore_args(abstract_with_shardings(abstract, shardings))
            },
            partial_restore=True,
        ),
    )
    params = restored["params"]
    if cfg.param_dtype != stored_cfg.param_dtype:
        params = jax.tree.map(lambda x: x.astype(cfg.param_dtype), params)
    ckpt.close()
    log.info("restored model from %s step %d", directory, step)
    return nnx.merge(graphdef, params)


def save_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))
