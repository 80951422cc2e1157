"""Tiny checkpoints that janus-serve serves like any other: one that answers every prompt with one word, and
an untrained one whose samples are random tokens.

A test module loads the fixtures with `pytest_plugins = ["tiny_checkpoints"]`; `served` counts what the
janus-serve processes a test started printed.
"""

import re
from pathlib import Path

import pytest


def one_word_mistral(word: int, eos: int = 2):
    """A tiny Mistral that answers every prompt with the token ``word``, then EOS, by construction: every
    embedding but ``word``'s carries a large value in dimension 0, ``word``'s in dimension 1, and the LM head
    reads dimension 0 as ``word`` and dimension 1 as EOS. Arena-Hard asks for up to 4096 greedy tokens; this
    model stops after one."""
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from janus_jax.model import Mistral, MistralConfig

    model = Mistral(MistralConfig.tiny(max_position_embeddings=8192), rngs=nnx.Rngs(0))
    embedding, head = np.array(model.embed_tokens.embedding.get_value()), np.array(model.lm_head.kernel.get_value())
    embedding[:, 0], embedding[word, :2] = 10.0, (0.0, 10.0)
    head[:2, :], head[0, word], head[1, eos] = 0.0, 5.0, 5.0
    model.embed_tokens.embedding.set_value(jnp.asarray(embedding))
    model.lm_head.kernel.set_value(jnp.asarray(head))
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The one-word tiny Mistral (it says "Hello") as an HF directory named tiny-janus."""
    from janus_jax.hf_io import save_pretrained
    from janus_jax.tokenizer import load_tokenizer

    (hello,) = load_tokenizer().encode("Hello")
    return save_pretrained(one_word_mistral(hello), tmp_path_factory.mktemp("ckpt") / "tiny-janus")


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny Mistral as an HF directory named tiny-random: sampled, it says a different string of
    random tokens each time."""
    from flax import nnx

    from janus_jax.hf_io import save_pretrained
    from janus_jax.model import Mistral, MistralConfig

    model = Mistral(MistralConfig.tiny(), rngs=nnx.Rngs(0))
    return save_pretrained(model, tmp_path_factory.mktemp("ckpt") / "tiny-random")


def served(printed: str) -> tuple[int, int]:
    """(janus-serve starts, chat completions it answered) in the captured output of the processes."""
    return printed.count("Started server process"), len(re.findall(r"POST /v1/chat/completions 200", printed))
