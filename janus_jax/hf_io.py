"""Hugging Face checkpoint import and export, driven by one declarative table.

Each row names an HF tensor, the janus parameter path, and whether the matrix is transposed
(HF `Linear.weight` is [out, in]; NNX kernels are [in, out]). Per-layer HF tensors are stacked
along a leading `layers` axis, because the decoder layers are scanned.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from janus_jax.model import Mistral, MistralConfig
from janus_jax.safetensors_io import SafetensorsFile, save_file
from janus_jax.sharding import host_copy

log = logging.getLogger(__name__)

# (HF name, janus path, transposed). "{i}" marks a per-layer tensor.
WEIGHT_MAP: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("model.embed_tokens.weight", ("embed_tokens", "embedding"), False),
    ("model.layers.{i}.input_layernorm.weight", ("layers", "input_layernorm", "weight"), False),
    ("model.layers.{i}.self_attn.q_proj.weight", ("layers", "self_attn", "q_proj", "kernel"), True),
    ("model.layers.{i}.self_attn.k_proj.weight", ("layers", "self_attn", "k_proj", "kernel"), True),
    ("model.layers.{i}.self_attn.v_proj.weight", ("layers", "self_attn", "v_proj", "kernel"), True),
    ("model.layers.{i}.self_attn.o_proj.weight", ("layers", "self_attn", "o_proj", "kernel"), True),
    ("model.layers.{i}.post_attention_layernorm.weight", ("layers", "post_attention_layernorm", "weight"), False),
    ("model.layers.{i}.mlp.gate_proj.weight", ("layers", "mlp", "gate_proj", "kernel"), True),
    ("model.layers.{i}.mlp.up_proj.weight", ("layers", "mlp", "up_proj", "kernel"), True),
    ("model.layers.{i}.mlp.down_proj.weight", ("layers", "mlp", "down_proj", "kernel"), True),
    ("model.norm.weight", ("norm", "weight"), False),
    ("lm_head.weight", ("lm_head", "kernel"), True),
)
# Buffers some older checkpoints carry; recomputed at run time, so safe to skip.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_names(cfg: MistralConfig) -> dict[str, tuple[tuple[str, ...], bool, int | None]]:
    """Every HF tensor name the config implies -> (janus path, transposed, layer index or None)."""
    names = {}
    for hf, path, transposed in WEIGHT_MAP:
        if "{i}" in hf:
            for i in range(cfg.num_hidden_layers):
                names[hf.format(i=i)] = (path, transposed, i)
        else:
            names[hf] = (path, transposed, None)
    return names


class _CheckpointFiles:
    """The safetensors files of an HF directory, single or sharded with an index."""

    def __init__(self, directory: Path):
        index = directory / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = {f: SafetensorsFile(directory / f) for f in sorted(set(weight_map.values()))}
            self.where = {name: files[f] for name, f in weight_map.items()}
        else:
            paths = sorted(glob.glob(str(directory / "*.safetensors")))
            if not paths:
                raise FileNotFoundError(f"{directory}: no *.safetensors files (PyTorch .bin checkpoints are not read)")
            self.where = {}
            for p in paths:
                sf = SafetensorsFile(p)
                for name in sf:
                    self.where[name] = sf

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name].shape(name)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.where[name][name]


def _validate(files: _CheckpointFiles, cfg: MistralConfig, expected_shapes: dict[str, tuple[int, ...]]) -> None:
    present = {n for n in files.where if not n.endswith(_IGNORED_SUFFIXES)}
    missing = sorted(set(expected_shapes) - present)
    unexpected = sorted(present - set(expected_shapes))
    wrong = [
        f"{n}: checkpoint {files.shape(n)} vs config {expected_shapes[n]}"
        for n in sorted(present & set(expected_shapes))
        if files.shape(n) != expected_shapes[n]
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if wrong:
        problems.append("shapes that disagree with config.json: " + "; ".join(wrong[:10]))
    if problems:
        raise ValueError("checkpoint does not match its config:\n  " + "\n  ".join(problems))


def _expected_hf_shape(janus_shape: tuple[int, ...], transposed: bool, per_layer: bool) -> tuple[int, ...]:
    shape = janus_shape[1:] if per_layer else janus_shape
    return tuple(reversed(shape)) if transposed else tuple(shape)


def resolve_hf_dir(path: str | os.PathLike) -> Path:
    """A local directory, or a hub repo id ("org/name") fetched into the HF cache (weights + configs only)."""
    directory = Path(path)
    if directory.is_dir():
        return directory
    if str(path).count("/") == 1 and not directory.exists():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))
    raise FileNotFoundError(f"{path}: not a directory, and not a hub repo id of the form 'org/name'")


def _checkpoint_dtype(hf_config: dict, directory: Path) -> str:
    """The dtype of an HF checkpoint, as transformers' `dtype="auto"` reads it.

    config.json's `dtype` (or the older `torch_dtype`) when present, else the dtype of the first
    floating-point tensor stored.
    """
    declared = hf_config.get("dtype") or hf_config.get("torch_dtype")
    if declared and declared != "auto":
        return str(declared).removeprefix("torch.")
    for name, sf in _CheckpointFiles(directory).where.items():
        stored = sf.dtype(name)
        if np.issubdtype(stored, np.floating) or stored == np.dtype(jnp.bfloat16):
            return stored.name
    raise ValueError("config.json names no dtype and the checkpoint stores no floating-point tensor")


def from_pretrained(
    path: str | os.PathLike,
    dtype: str = "auto",
    *,
    compute_dtype: str | None = None,
    mesh: Mesh | None = None,
    **config_overrides,
) -> Mistral:
    """Load an HF Mistral directory into a (sharded) janus Mistral.

    As in transformers, `dtype="auto"` keeps the checkpoint's own dtype (config.json's `dtype`,
    else the stored tensors') and the model computes in the dtype of its weights, so an fp32
    checkpoint gives fp32 logits and `save_pretrained` with its defaults writes the same bits back.
    Any other `dtype` casts the weights; `compute_dtype` sets activations and matmuls apart from
    the weights (e.g. fp32 master weights computing in bf16, as training does).

    Each device's shard of each weight is read straight from a memory map, so host memory never
    holds the checkpoint twice, and on a pod each host reads only what its devices hold.
    `config_overrides` set other execution fields (`scan_layers`, `remat`, `attention_impl`...).
    """
    directory = resolve_hf_dir(path)
    hf_config = json.loads((directory / "config.json").read_text())
    param_dtype = _checkpoint_dtype(hf_config, directory) if dtype == "auto" else dtype
    cfg = MistralConfig.from_hf_dict(
        hf_config, param_dtype=param_dtype, dtype=compute_dtype or param_dtype, **config_overrides
    )
    files = _CheckpointFiles(directory)

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Mistral(cfg, rngs=nnx.Rngs(0))))
    if mesh is not None:
        from janus_jax.sharding import state_shardings

        shardings = state_shardings(abstract, mesh)
    else:
        device = jax.local_devices()[0]
        shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(device), abstract)

    by_path: dict[tuple[str, ...], tuple[str, bool]] = {p: (hf, t) for hf, p, t in WEIGHT_MAP}
    flat = dict(nnx.to_flat_state(abstract))
    flat_shardings = dict(nnx.to_flat_state(shardings))
    expected = {}
    for hf, (jpath, transposed, layer) in hf_names(cfg).items():
        expected[hf] = _expected_hf_shape(flat[jpath].get_value().shape, transposed, layer is not None)
    _validate(files, cfg, expected)

    loaded = {}
    for jpath, variable in flat.items():
        hf_template, transposed = by_path[jpath]
        shape, target_dtype = variable.get_value().shape, variable.get_value().dtype
        per_layer = "{i}" in hf_template

        def read(index, hf_template=hf_template, transposed=transposed, per_layer=per_layer, target_dtype=target_dtype):
            def one(name, idx):
                idx = tuple(reversed(idx)) if transposed else idx
                block = np.asarray(files[name][idx])
                return (block.T if transposed else block).astype(target_dtype)

            if not per_layer:
                return one(hf_template, index)
            layers = range(*index[0].indices(cfg.num_hidden_layers))
            return np.stack([one(hf_template.format(i=i), index[1:]) for i in layers])

        arr = jax.make_array_from_callback(shape, flat_shardings[jpath].get_value(), read)
        loaded[jpath] = variable.replace(arr)
    state = nnx.from_flat_state(loaded)
    log.info("loaded %s (%d parameters, weights %s, compute %s)", directory, cfg.num_params, cfg.param_dtype, cfg.dtype)
    return nnx.merge(graphdef, state)


def _weights_dtype(variables) -> np.dtype:
    """The one dtype of a model's weights (the widest, should they mix, so that nothing is rounded)."""
    dtypes = {np.dtype(v.get_value().dtype) for v in variables}
    return max(dtypes, key=lambda d: d.itemsize)


def save_pretrained(
    model: Mistral,
    path: str | os.PathLike,
    *,
    dtype: str = "auto",
    max_shard_bytes: int = 5 * 1024**3,
) -> Path:
    """Write an HF directory (config.json, safetensors shards + index) that transformers and vLLM load.

    `dtype="auto"` writes the weights in the dtype they have (a model loaded with defaults goes back
    bit for bit); any other dtype casts them, e.g. `"bfloat16"` halves an fp32 training checkpoint.
    Tensors are gathered one layer at a time and written shard by shard, so host memory holds at
    most one shard. Every process takes part in the gathers; process 0 writes.
    """
    cfg = model.config
    out = Path(path)
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    np_dtype = _weights_dtype(flat.values()) if dtype == "auto" else np.dtype(jnp.dtype(dtype))
    plan: list[tuple[str, tuple[str, ...], bool, int | None, int]] = []
    for hf, (jpath, transposed, layer) in hf_names(cfg).items():
        shape = flat[jpath].get_value().shape
        nbytes = math.prod(shape[1:] if layer is not None else shape) * np_dtype.itemsize
        plan.append((hf, jpath, transposed, layer, nbytes))

    shards: list[list] = [[]]
    size = 0
    for entry in plan:
        if shards[-1] and size + entry[-1] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry[-1]

    writer = jax.process_index() == 0
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    )
    weight_map = {}
    for filename, shard in zip(names, shards):
        tensors = []
        for hf, jpath, transposed, layer, _ in shard:
            value = flat[jpath].get_value()
            host = host_copy(value[layer] if layer is not None else value).astype(np_dtype)
            tensors.append((hf, np.ascontiguousarray(host.T if transposed else host)))
            weight_map[hf] = filename
        if writer:
            save_file(tensors, out / filename, metadata={"format": "pt"})
    if writer:
        if len(shards) > 1:
            total = sum(e[-1] for e in plan)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        # transformers >= 4.56 reads `dtype`, older releases and vLLM `torch_dtype`: write both.
        hf_cfg = {**cfg.to_hf_dict(torch_dtype=np_dtype.name), "dtype": np_dtype.name}
        (out / "config.json").write_text(json.dumps(hf_cfg, indent=2))
        log.info("wrote %s (%d file(s), %s)", out, len(shards), np_dtype.name)
    return out


__all__ = ["WEIGHT_MAP", "from_pretrained", "hf_names", "save_pretrained"]
