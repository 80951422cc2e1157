"""`load_model(source)`: one way to get a model, whatever the source.

A source is an HF Mistral directory, a hub id (`org/name`, resolved through the Hugging Face cache, so
`HF_HUB_OFFLINE=1` works once it is cached), or a janus-train checkpoint (a workdir, its `checkpoints/`
folder, or one step folder, local or `gs://`; latest step unless `step` is given). A checkpoint of the reward-model
objective loads as a `RewardModel`, any other as a `Mistral`. Training (`model.init_from`), export,
generation, serving, reference precompute and Best-of-N all load through here.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from flax import nnx

from janus_jax.model import Mistral, MistralConfig
from janus_jax.model.reward import RewardModel
from janus_jax.paths import is_url, to_path

log = logging.getLogger(__name__)

SourceKind = Literal["hf", "checkpoint"]


def source_kind(source: str | os.PathLike) -> SourceKind:
    """Decide, in this one place, whether `source` is an HF model or a janus-train checkpoint."""
    path = to_path(source)
    if (path / "config.json").is_file():
        if is_url(path):
            raise ValueError(
                f"{source}: HF model directories are read from local disk; copy it first "
                f"(gcloud storage cp -r {source} .) or load a janus-train workdir from gs:// instead"
            )
        return "hf"
    if path.exists():
        from janus_jax.train.checkpoint import resolve_checkpoint_dir

        directory, step = resolve_checkpoint_dir(path)
        if step is not None or directory.is_dir():
            return "checkpoint"
    text = str(source)
    if not path.exists() and text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return "hf"  # a hub id
    raise FileNotFoundError(
        f"{source}: not found (expected an HF Mistral directory with config.json, a hub id 'org/name', "
        "or a janus-train workdir / checkpoints folder / step folder)"
    )


def template_of_source(source: str | os.PathLike, *, step: int | None = None) -> str:
    """The prompt template (`janus_jax.prompts.TEMPLATES`) the model at `source` was trained with."""
    from janus_jax.prompts import template_of

    if source_kind(source) == "hf":
        from janus_jax.hf_io import resolve_hf_dir

        return template_of(resolve_hf_dir(source))
    from janus_jax.train.checkpoint import Checkpointer, resolve_checkpoint_dir

    directory, found = resolve_checkpoint_dir(source)
    ckpt = Checkpointer(directory, async_save=False)
    try:
        return template_of(ckpt.read_meta(step if step is not None else found))
    finally:
        ckpt.close()


def load_model(
    source: str | os.PathLike,
    *,
    step: int | None = None,
    mesh=None,
    param_dtype: str | None = None,
    **execution,
) -> Mistral | RewardModel:
    """Load a policy or reward model from any source (see the module docstring).

    `param_dtype` casts the weights (default: as stored; float32 for HF directories). `execution` sets
    execution fields of the config (`dtype` of activations, `scan_layers`, `remat`, `attention_impl`,
    `sliding_window`); architecture fields always come from the source.
    """
    kind = source_kind(source)
    if kind == "hf":
        if step is not None:
            raise ValueError(f"{source}: an HF model has no training steps (step={step})")
        from janus_jax.hf_io import from_pretrained

        overrides = dict(execution)
        if "dtype" in overrides:
            overrides["compute_dtype"] = overrides.pop("dtype")
        return from_pretrained(source, param_dtype or "float32", mesh=mesh, **overrides)
    from janus_jax.train.checkpoint import restore_params

    params, stored, reward = restore_params(source, step=step, mesh=mesh)
    cfg = stored.replace(**({"param_dtype": param_dtype} if param_dtype else {}), **execution)
    if cfg.param_dtype != stored.param_dtype:
        import jax

        params = jax.tree.map(lambda x: x.astype(cfg.param_dtype), params)
    module = RewardModel if reward else Mistral
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: module(cfg, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, params)


def config_of(model: Mistral | RewardModel) -> MistralConfig:
    return model.model.config if isinstance(model, RewardModel) else model.config
