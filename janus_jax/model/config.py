"""Mistral configuration: the fields of HF `MistralConfig`, plus how janus-jax runs them."""

from __future__ import annotations

import dataclasses
from typing import Any

REMAT_POLICIES = ("none", "minimal", "save_qkv", "full")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash")  # auto: cudnn on GPU, splash on TPU, else xla

# The fields that fix the shapes of the weights (and rope θ, which they were trained with).
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rope_theta",
)

# HF config.json keys read into MistralConfig. Everything else is ignored on purpose: some public
# revisions of Mistral-7B-v0.2 carry wrong values in fields such as `attention_dropout`.
HF_FIELDS = (
    *(f for f in ARCHITECTURE_FIELDS if f != "rope_theta"),  # rope θ: read from rope_parameters below
    "rms_norm_eps",
    "sliding_window",
    "max_position_embeddings",
    "bos_token_id",
    "eos_token_id",
)


@dataclasses.dataclass(frozen=True)
class MistralConfig:
    """Architecture (HF names) and execution settings (dtype, scan, remat, attention kernel)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = None
    max_position_embeddings: int = 32768
    bos_token_id: int = 1
    eos_token_id: int = 2
    # Execution settings: not part of the checkpoint.
    dtype: str = "bfloat16"  # activations and matmuls
    param_dtype: str = "float32"  # master weights
    scan_layers: bool = True
    remat: str = "none"
    attention_impl: str = "auto"

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; expected one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={self.attention_impl!r}; expected one of {ATTENTION_IMPLS}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window={self.sliding_window} must be positive or None")

    def replace(self, **changes: Any) -> MistralConfig:
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        d, f, v, n = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
        return 2 * v * d + n * per_layer + d

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> MistralConfig:
        """A few hundred thousand parameters: CPU tests and demos in seconds."""
        base = dict(
            vocab_size=32000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=2048,
            dtype="float32",
        )
        return cls(**{**base, **overrides})

    @classmethod
    def mistral_7b_v0_2(cls, **overrides: Any) -> MistralConfig:
        """The base model of every Janus run: rope θ 1e6, no sliding window."""
        return cls(**overrides)

    @classmethod
    def mistral_7b_v0_1(cls, **overrides: Any) -> MistralConfig:
        return cls(**{"rope_theta": 1e4, "sliding_window": 4096, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MistralConfig:
        presets = {"tiny": cls.tiny, "mistral_7b_v0_2": cls.mistral_7b_v0_2, "mistral_7b_v0_1": cls.mistral_7b_v0_1}
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; choose from {sorted(presets)}")
        return presets[name](**overrides)

    # ---- HF config.json ------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], **overrides: Any) -> MistralConfig:
        """Read an HF config.json through a whitelist; refuse other architectures."""
        model_type = hf.get("model_type")
        archs = hf.get("architectures") or []
        if model_type != "mistral" or (archs and not any(a.startswith("Mistral") for a in archs)):
            raise ValueError(
                f"config.json describes model_type={model_type!r}, architectures={archs}; "
                "janus-jax loads Mistral checkpoints (model_type 'mistral') only"
            )
        kwargs: dict[str, Any] = {k: hf[k] for k in HF_FIELDS if hf.get(k) is not None}
        if "sliding_window" in hf:  # None is meaningful: no window
            kwargs["sliding_window"] = hf["sliding_window"]
        if "head_dim" not in kwargs:
            kwargs["head_dim"] = hf["hidden_size"] // hf["num_attention_heads"]
        rope = hf.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_parameters {rope} are not supported (only the default rotary embedding)")
        theta = rope.get("rope_theta", hf.get("rope_theta"))
        if theta is not None:
            kwargs["rope_theta"] = float(theta)
        if hf.get("tie_word_embeddings"):
            raise ValueError("tie_word_embeddings=True is not a Mistral layout; refusing to load")
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        return cls(**{**kwargs, **overrides})

    def to_hf_dict(self, torch_dtype: str = "float32") -> dict[str, Any]:
        return {
            "architectures": ["MistralForCausalLM"],
            "model_type": "mistral",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "sliding_window": self.sliding_window,
            "attention_dropout": 0.0,
            "tie_word_embeddings": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": torch_dtype,
            "use_cache": True,
        }
