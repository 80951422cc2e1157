"""Load a model and its tokenizer for inference from an HF directory or a training checkpoint."""

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


def default_dtype() -> str:
    """bf16 weights and matmuls on accelerators; fp32 on CPU, where bf16 matmuls are slow."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def add_model_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf", metavar="DIR", help="an HF Mistral directory (config.json + safetensors)")
    source.add_argument("--checkpoint", metavar="DIR", help="a janus-train workdir, checkpoints/ folder or step folder")
    parser.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="SentencePiece .model file or HF tokenizer directory (default: the --hf directory when it has "
        "tokenizer files, else the bundled Mistral v1 tokenizer)",
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
    dtype = args.dtype or default_dtype()
    mesh = parse_mesh(args.mesh)
    if args.hf:
        directory = Path(args.hf)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"--hf={directory}: no config.json there (expected an HF Mistral directory)")
        from janus_jax.hf_io import from_pretrained

        model = from_pretrained(directory, dtype=dtype, compute_dtype=dtype, mesh=mesh)
        tokenizer_path = args.tokenizer
        if tokenizer_path is None and any((directory / f).is_file() for f in _HF_TOKENIZER_FILES):
            tokenizer_path = directory
    else:
        directory = Path(args.checkpoint)
        try:
            from janus_jax.train.checkpoint import load_model
        except ImportError as e:
            raise RuntimeError(f"--checkpoint needs janus_jax.train.checkpoint, which failed to import: {e}") from e
        model = with_compute_dtype(load_model(directory, mesh=mesh), dtype)
        tokenizer_path = args.tokenizer
    tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}"
        )
    name = args.model_name or directory.absolute().name
    log.info("loaded %s (%s, %d parameters), tokenizer %s", name, dtype, model.config.num_params, tokenizer.name)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, mesh=mesh)
