"""Flax NNX Mistral with HF naming (see hf_io for the weight mapping)."""

from janus_jax.model.config import MistralConfig
from janus_jax.model.mistral import KVCache, Mistral, PerLayerMistral, init_cache

__all__ = ["KVCache", "Mistral", "MistralConfig", "PerLayerMistral", "init_cache"]
