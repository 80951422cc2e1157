"""Load a policy and its tokenizer for inference from any `janus_jax.load.load_model` source."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from janus_jax.model import Mistral
from janus_jax.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16")
_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclasses.dataclass
class LoadedModel:
    model: Mistral
    tokenizer: Tokenizer
    name: str  # the model id clients ask for
    mesh: Any = None  # the mesh the parameters live on, if any
    template: str = "mistral_inst"  # the prompt template it was trained with (janus_jax.prompts.TEMPLATES)


def default_dtype() -> str:
    """bf16 weights and matmuls on accelerators; fp32 on CPU, where bf16 matmuls are slow."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def add_model_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        metavar="SOURCE",
        help="an HF Mistral directory, a hub id (org/name), or a janus-train workdir / checkpoints / step folder",
    )
    source.add_argument("--hf", dest="model", metavar="DIR", help="same as --model (an HF directory or hub id)")
    source.add_argument("--checkpoint", dest="model", metavar="DIR", help="same as --model (a janus-train workdir)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="SentencePiece .model file or HF tokenizer directory (default: the model directory when it has "
        "tokenizer files, else the tokenizer the run trained with, else the bundled Mistral v1 tokenizer)",
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, help="weights and activations (default: float32 on CPU, else bfloat16)"
    )
    parser.add_argument("--mesh", metavar="D,F,T", help="shard over a (data, fsdp, tensor) mesh, e.g. 1,-1,1")
    parser.add_argument("--model-name", help="model id reported to clients (default: the directory name)")


def with_compute_dtype(model: Mistral, dtype: str) -> Mistral:
    """The same parameters (cast to `dtype`) under a config whose activations use `dtype`."""
    cfg = model.config.replace(dtype=dtype, param_dtype=dtype)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Mistral(cfg, rngs=nnx.Rngs(0))))
    state = jax.tree.map(lambda x: x.astype(dtype), nnx.state(model))
    return nnx.merge(graphdef, state)


def parse_mesh(text: str | None):
    if not text:
        return None
    from janus_jax.sharding import make_mesh

    try:
        shape = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--mesh={text!r}: expected three comma-separated integers such as 1,-1,1") from None
    return make_mesh(shape)


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    return load_for_inference(
        args.model,
        step=getattr(args, "step", None),
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        mesh=parse_mesh(args.mesh),
        name=args.model_name,
    )


def load_for_inference(
    source: str,
    *,
    step: int | None = None,
    tokenizer: str | None = None,
    dtype: str | None = None,
    mesh=None,
    name: str | None = None,
) -> LoadedModel:
    """A policy and its tokenizer, weights and activations in `dtype`, from any `load_model` source."""
    from janus_jax.load import load_model, source_kind, template_of_source

    dtype = dtype or default_dtype()
    model = load_model(source, step=step, mesh=mesh)
    if not isinstance(model, Mistral):
        raise ValueError(f"{source} holds a reward model; generation and serving need a policy (a causal LM)")
    model = with_compute_dtype(model, dtype)
    tokenizer_path = tokenizer or _tokenizer_of(source, source_kind(source))
    tok = load_tokenizer(tokenizer_path)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer {tok.name} has {tok.vocab_size} ids but the model only {model.config.vocab_size}")
    name = name or Path(source).absolute().name
    log.info("loaded %s (%s, %d parameters), tokenizer %s", name, dtype, model.config.num_params, tok.name)
    template = template_of_source(source, step=step)
    return LoadedModel(model=model, tokenizer=tok, name=name, mesh=mesh, template=template)


def _tokenizer_of(source: str, kind: str) -> str | None:
    """The HF directory's own tokenizer files, or the tokenizer a training run used (its manifest)."""
    if kind == "hf":
        directory = Path(source)
        return str(directory) if any((directory / f).is_file() for f in _HF_TOKENIZER_FILES) else None
    from janus_jax.manifest import read_manifest
    from janus_jax.train.checkpoint import resolve_checkpoint_dir

    checkpoints, _ = resolve_checkpoint_dir(source)
    data = ((read_manifest(checkpoints.parent) or {}).get("config") or {}).get("data") or {}
    return data.get("tokenizer") or None
