"""Orbax checkpoints: async saves, keep the last K, exact resume, restore onto any mesh.

A checkpoint holds the train state (params, optimizer state, step) and a small JSON record of
the model config and data position. Restores go into ShapeDtypeStructs that carry concrete
shardings, so a run saved on one mesh restores onto another. A step that cannot be read is reported
(step, folder, error) and set aside, and the run resumes from the newest step that can. Folders are
local or `gs://` (janus_jax.paths).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from janus_jax.paths import absolute

log = logging.getLogger(__name__)


class CheckpointReadError(RuntimeError):
    """A checkpoint step exists but cannot be restored (torn write, missing or corrupt files)."""

    def __init__(self, step_dir: epath.Path, error: BaseException):
        self.step_dir = step_dir
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        super().__init__(f"checkpoint {step_dir} cannot be read: {type(error).__name__}: {detail[:500]}")


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the project's layout (workdir/checkpoints)."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        self.directory = absolute(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
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
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # orbax and tensorstore raise many types; name the step either way
            raise CheckpointReadError(self.directory / str(step), e) from e
        return restored["state"], restored["meta"]

    def restore_newest_readable(self, target: Any) -> tuple[int, Any, dict, list[str]] | None:
        """(step, state, meta, problems) of the newest step that restores, or None without checkpoints.

        Each unreadable newer step is logged, renamed to `<step>.unreadable-<time>` (so a later save of
        that step does not collide with it) and described in `problems`.
        """
        problems: list[str] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, target)
            except CheckpointReadError as e:
                log.error("%s; resuming from an earlier step", e)
                problems.append(str(e))
                self._set_aside(step)
                continue
            return step, state, meta, problems
        if problems:
            shown = "\n  ".join(problems)
            raise RuntimeError(f"no checkpoint under {self.directory} can be read:\n  {shown}")
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            step_dir = self.directory / str(step)
            step_dir.rename(step_dir.with_name(f"{step}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}"))
        if jax.process_count() > 1:  # on gs:// a rename copies every file: all hosts wait for it
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.reload()

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        try:
            return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:
            raise CheckpointReadError(self.directory / str(step), e) from e

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_with_shardings(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def resolve_checkpoint_dir(path: str | os.PathLike) -> tuple[epath.Path, int | None]:
    """Accept a workdir, its checkpoints/ folder, or one step folder; return (checkpoints dir, step)."""
    path = absolute(path)
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    return path, None


def restore_params(path: str | os.PathLike, *, step: int | None = None, mesh=None):
    """(params, stored MistralConfig, is_reward_model) of a training checkpoint, parameters only.

    `step` defaults to the step folder given, else the latest. The optimizer state is not read.
    """
    from flax import nnx

    from janus_jax.model import Mistral, MistralConfig
    from janus_jax.model.reward import RewardModel
    from janus_jax.sharding import make_mesh, state_shardings

    directory, found_step = resolve_checkpoint_dir(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: no checkpoints there (expected a janus-train workdir)")
    ckpt = Checkpointer(directory, async_save=False)
    try:
        step = step if step is not None else found_step if found_step is not None else ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {directory}")
        meta = ckpt.read_meta(step)
    finally:
        ckpt.close()
    state_dir = directory / str(step) / "state"
    try:
        stored = ocp.PyTreeCheckpointHandler().metadata(state_dir)["params"]
    except Exception as e:
        raise CheckpointReadError(directory / str(step), e) from e
    reward = "score" in stored
    cfg = MistralConfig(**meta["model_config"])
    module = RewardModel if reward else Mistral
    abstract = nnx.state(nnx.eval_shape(lambda: module(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    target = abstract_with_shardings(abstract, state_shardings(abstract, mesh or make_mesh((1, -1, 1))))
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            state_dir,
            args=ocp.args.PyTreeRestore(
                item={"params": target},
                restore_args={"params": ocp.checkpoint_utils.construct_restore_args(target)},
                partial_restore=True,
            ),
        )
    except Exception as e:
        raise CheckpointReadError(directory / str(step), e) from e
    log.info("restored %s from %s step %d", module.__name__, directory, step)
    return restored["params"], cfg, reward
