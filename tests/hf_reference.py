"""Helpers that build tiny random HF Mistral checkpoints (PyTorch) for parity tests."""

from __future__ import annotations

import numpy as np
import torch
import transformers


def tiny_hf_config(**overrides) -> transformers.MistralConfig:
    base = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=False,
    )
    theta = overrides.pop("rope_theta", None)
    if theta is not None:
        base["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    return transformers.MistralConfig(**{**base, **overrides})


def random_hf_model(seed: int = 0, **overrides) -> transformers.MistralForCausalLM:
    torch.manual_seed(seed)
    cfg = tiny_hf_config(**overrides)
    cfg._attn_implementation = "eager"
    model = transformers.MistralForCausalLM(cfg).eval()
    # HF initialises norms to exactly 1; perturb them so the test sees a wrong mapping.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_logits(model: transformers.MistralForCausalLM, input_ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(input_ids), dtype=torch.long))
    return out.logits.float().numpy()
