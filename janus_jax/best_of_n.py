"""Best-of-N: score N responses per (system, prompt) with a trained reward model and keep the best.

The command line is `janus-best-of-n` (janus_jax/cli/best_of_n.py). Each response is rendered exactly
as in reward-model training (janus_jax/data/scoring.py: BOS + `[INST] {system}\\n{prompt} [/INST]` +
response, truncated to the RM's sequence length the same way), and the reward is read where training
read it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from janus_jax.data.scoring import scoring_batches
from janus_jax.load import load_model
from janus_jax.model.reward import RewardModel
from janus_jax.prompts import template_of
from janus_jax.tokenizer import Tokenizer

log = logging.getLogger("janus_jax.best_of_n")

DEFAULT_MAX_LENGTH = 2048


def load_reward_model(source: str | os.PathLike, *, mesh=None, step: int | None = None) -> RewardModel:
    """A reward model saved by `janus-train --config=configs/rm.py:...` (workdir, checkpoints/ or step)."""
    model = load_model(source, mesh=mesh, step=step)
    if not isinstance(model, RewardModel):
        raise ValueError(
            f"{source} holds a policy, not a reward model (no 'score' head): train one with configs/rm.py"
        )
    return model


def run_settings(rm_path: str | os.PathLike) -> dict:
    """Tokenizer, sequence length and prompt template the reward model was trained with (its workdir's manifest)."""
    from janus_jax.manifest import read_manifest
    from janus_jax.train.checkpoint import resolve_checkpoint_dir

    directory, _ = resolve_checkpoint_dir(rm_path)
    manifest = read_manifest(directory.parent) or {}
    data = manifest.get("config", {}).get("data", {})
    return {
        "tokenizer": data.get("tokenizer", ""),
        "max_length": int(data.get("seq_len") or DEFAULT_MAX_LENGTH),
        "template": template_of(manifest.get("config", {})),
    }


@dataclasses.dataclass(frozen=True)
class Selection:
    """The outcome for one (system, prompt): every response's reward and the argmax (first on ties)."""

    rewards: list[float]
    best_index: int
    best_response: str


class RewardScorer:
    """Scores (system, prompt, response) triples with a reward model, in fixed-shape batches."""

    def __init__(self, model: RewardModel, tokenizer: Tokenizer, *, max_length: int, batch_size: int = 16,
                 mesh=None, template: str = "mistral_inst"):
        from janus_jax.sharding import batch_sharding, make_mesh

        self.tokenizer = tokenizer
        self.template = template
        self.max_length = int(max_length)
        mesh = mesh or make_mesh((1, -1, 1))
        rows_per_shard = mesh.shape["data"] * mesh.shape["fsdp"]
        self.batch_size = -(-max(1, batch_size) // rows_per_shard) * rows_per_shard
        self._sharding = batch_sharding(mesh, 2)
        self._lengths_sharding = batch_sharding(mesh, 1)
        graphdef, params = nnx.split(model, nnx.Param)
        self._params = params

        @jax.jit
        def rewards(p, input_ids, positions, segment_ids, lengths):
            return nnx.merge(graphdef, p)(input_ids, positions, segment_ids, lengths)

        self._rewards = rewards

    def prompt_fits(self, system: str, prompt: str) -> bool:
        """Whether at least one response token fits after the prompt (else training would drop the row)."""
        from janus_jax.prompts import prompt_text

        return len(self.tokenizer.encode(prompt_text(system, prompt, self.template))) + 1 <= self.max_length

    def score(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        """float32 rewards, one per (system, prompt, response); raises on a prompt that leaves no room."""
        out = np.zeros(len(triples), np.float32)
        put = lambda x: jax.device_put(x, self._sharding)  # noqa: E731
        for batch in scoring_batches(self.tokenizer, triples, self.max_length, self.batch_size, self.template):
            a = batch.arrays
            rewards = self._rewards(
                self._params,
                put(a["input_ids"]),
                put(a["positions"]),
                put(a["segment_ids"]),
                jax.device_put(batch.lengths, self._lengths_sharding),
            )
            out[batch.start : batch.start + batch.real] = np.asarray(jax.device_get(rewards))[: batch.real]
        return out


def select_best(scorer: RewardScorer, requests: Sequence[tuple[str, str, Sequence[str]]]) -> list[Selection]:
    """For each (system, prompt, responses): the rewards of all responses and the highest-scoring one."""
    for i, (_, _, responses) in enumerate(requests):
        if not responses:
            raise ValueError(f"request {i}: no responses to choose from")
    triples = [(system, prompt, r) for system, prompt, responses in requests for r in responses]
    rewards = scorer.score(triples)
    out, start = [], 0
    for _, _, responses in requests:
        mine = rewards[start : start + len(responses)]
        start += len(responses)
        best = int(np.argmax(mine))
        out.append(Selection([float(x) for x in mine], best, responses[best]))
    return out
