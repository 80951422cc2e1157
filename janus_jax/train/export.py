"""A training checkpoint as an HF Mistral directory (the library side of `janus-export`).

The result loads with `transformers.AutoModelForCausalLM.from_pretrained` and vLLM; the default
SentencePiece tokenizer is written beside the weights so the directory is self-contained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def write_tokenizer_files(out: Path, tokenizer_path: str | None = None, template: str = "mistral_inst") -> None:
    """tokenizer.model + tokenizer_config.json as in the released Janus checkpoints, with the run's prompt
    template as `chat_template`, so transformers' `apply_chat_template` and vLLM build the prompts the
    model was trained on (`janus_jax.prompts.template_of(out)` reads it back)."""
    from janus_jax.prompts import get_template
    from janus_jax.tokenizer import default_model_path

    chat_template = get_template(template).jinja
    source = Path(tokenizer_path) if tokenizer_path else default_model_path()
    if source.is_dir():
        for f in source.iterdir():
            if f.is_file() and (f.name.startswith("tokenizer") or f.name == "special_tokens_map.json"):
                shutil.copy(f, out / f.name)
        config_path = out / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        config_path.write_text(json.dumps({**config, "chat_template": chat_template}, indent=2))
        return
    shutil.copy(source, out / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "model_max_length": 32768,
        "chat_template": chat_template,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def export(
    checkpoint: str, out: str, *, step: int | None = None, dtype: str = "bfloat16", tokenizer: str | None = None
):
    from janus_jax.hf_io import save_pretrained
    from janus_jax.load import load_model, template_of_source
    from janus_jax.model import Mistral

    model = load_model(checkpoint, step=step)
    if not isinstance(model, Mistral):
        raise ValueError(f"{checkpoint} holds a reward model; janus-export writes causal LMs (MistralForCausalLM)")
    path = save_pretrained(model, out, dtype=dtype)
    write_tokenizer_files(path, tokenizer, template_of_source(checkpoint, step=step))
    return path
