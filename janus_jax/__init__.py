"""janus-jax: a Flax Mistral for system-message alignment (Janus), from laptop to pod.

Heavy submodules load lazily so that light users (the LLM client used by data_gen and eval)
do not pay for importing JAX.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "from_pretrained": "janus_jax.hf_io",
    "save_pretrained": "janus_jax.hf_io",
    "MistralConfig": "janus_jax.model",
    "Mistral": "janus_jax.model",
    "Tokenizer": "janus_jax.tokenizer",
    "load_tokenizer": "janus_jax.tokenizer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'janus_jax' has no attribute {name!r}")
