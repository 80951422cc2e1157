"""Best-of-N: score N responses per (system, prompt) with a trained reward model and keep the best.

    janus-best-of-n --rm=runs/rm --input=candidates.jsonl --output=best.jsonl
    janus-best-of-n --rm=runs/rm --policy=runs/dpo --n=8 --input=prompts.jsonl --output=best.jsonl

Input rows carry `prompt` (and optionally `system`) plus either a `responses` list, or, with
`--policy`, nothing more: then N responses are sampled from the policy (a janus-train workdir or an
HF directory; the paper's sampling setting by default). Every output row is the input row plus
`responses`, `rewards`, `best_index`, `best_response` and `input_line`. A rerun skips the input lines
already in the output, and row i samples with seeds derived from (seed, i), so an interrupted and
resumed run writes what one run would have. Malformed rows are reported by line and counted.

Each response is rendered exactly as in reward-model training (the data pipeline's own tokenizer
path: BOS + `[INST] {system}\\n{prompt} [/INST]` + response, truncated to the RM's sequence length
the same way), and the reward is read where training read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from janus_jax.data.packing import EpochPlan, build_rows
from janus_jax.data.records import Example
from janus_jax.data.report import OVER_LENGTH_DROPPED, OVER_LENGTH_TRUNCATED, DataReport
from janus_jax.data.tokenized import tokenize_examples
from janus_jax.model import MistralConfig
from janus_jax.model.reward import RewardModel
from janus_jax.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("janus_jax.best_of_n")

DEFAULT_MAX_LENGTH = 2048


def load_reward_model(path: str | os.PathLike, *, mesh=None, step: int | None = None) -> RewardModel:
    """Restore a reward model saved by `janus-train --config=configs/rm.py:...` (workdir, checkpoints/ or step)."""
    import orbax.checkpoint as ocp

    from janus_jax.sharding import make_mesh, state_shardings
    from janus_jax.train.checkpoint import Checkpointer, abstract_with_shardings, resolve_checkpoint_dir

    directory, found_step = resolve_checkpoint_dir(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: no reward-model checkpoint there (expected a janus-train rm workdir)")
    ckpt = Checkpointer(directory, async_save=False)
    try:
        step = step if step is not None else found_step if found_step is not None else ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {directory}")
        meta = ckpt.read_meta(step)
    finally:
        ckpt.close()
    state_dir = directory / str(step) / "state"
    stored = ocp.PyTreeCheckpointHandler().metadata(state_dir)["params"]
    if "score" not in stored:
        raise ValueError(
            f"{state_dir} holds a {sorted(stored)} model, not a reward model (no 'score' head): "
            "train one with configs/rm.py"
        )
    cfg = MistralConfig(**meta["model_config"])
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: RewardModel(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    target = abstract_with_shardings(abstract, state_shardings(abstract, mesh or make_mesh((1, -1, 1))))
    restored = ocp.PyTreeCheckpointer().restore(
        state_dir,
        args=ocp.args.PyTreeRestore(
            item={"params": target},
            restore_args={"params": ocp.checkpoint_utils.construct_restore_args(target)},
            partial_restore=True,
        ),
    )
    log.info("restored reward model from %s step %d", directory, step)
    return nnx.merge(graphdef, restored["params"])


def run_settings(rm_path: str | os.PathLike) -> dict:
    """Tokenizer and sequence length the reward model was trained with (from its workdir's manifest)."""
    from janus_jax.manifest import read_manifest
    from janus_jax.train.checkpoint import resolve_checkpoint_dir

    directory, _ = resolve_checkpoint_dir(rm_path)
    manifest = read_manifest(directory.parent) or {}
    data = manifest.get("config", {}).get("data", {})
    return {"tokenizer": data.get("tokenizer", ""), "max_length": int(data.get("seq_len") or DEFAULT_MAX_LENGTH)}


@dataclasses.dataclass(frozen=True)
class Selection:
    """The outcome for one (system, prompt): every response's reward and the argmax (first on ties)."""

    rewards: list[float]
    best_index: int
    best_response: str


class RewardScorer:
    """Scores (system, prompt, response) triples with a reward model, in fixed-shape batches."""

    def __init__(self, model: RewardModel, tokenizer: Tokenizer, *, max_length: int, batch_size: int = 16,
                 mesh=None):
        from janus_jax.sharding import batch_sharding, make_mesh

        self.tokenizer = tokenizer
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

        return len(self.tokenizer.encode(prompt_text(system, prompt))) + 1 <= self.max_length

    def score(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        """float32 rewards, one per (system, prompt, response); raises on a prompt that leaves no room."""
        examples = [Example(i, prompt, system, prompt, response) for i, (system, prompt, response) in
                    enumerate(triples)]
        report = DataReport(over_length="truncate")
        store = tokenize_examples(self.tokenizer, examples, self.max_length, "truncate", report, "score")
        dropped = [i.row for i in report.issues if i.kind == OVER_LENGTH_DROPPED]
        if dropped:
            raise ValueError(f"items {dropped}: the prompt leaves no room for a response in {self.max_length} tokens")
        truncated = sum(1 for i in report.issues if i.kind == OVER_LENGTH_TRUNCATED)
        if truncated:
            log.info("%d responses truncated to %d tokens before scoring (as in training)", truncated, self.max_length)
        n = len(store)
        plan = EpochPlan(np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64))
        out = np.zeros(n, np.float32)
        for start in range(0, n, self.batch_size):
            rows = range(start, start + self.batch_size)
            longest = int(store.lengths[start : start + self.batch_size].max()) - 1
            width = min(self.max_length, max(16, 1 << (longest - 1).bit_length()))  # few distinct shapes
            arrays = build_rows(store, plan, rows, width, self.tokenizer.pad_id)
            lengths = np.ones(self.batch_size, np.int32)  # padding rows read position 0 and are discarded
            real = min(n, rows.stop) - start
            lengths[:real] = store.lengths[start : start + real] - 1
            put = lambda x: jax.device_put(x, self._sharding)  # noqa: E731
            rewards = self._rewards(
                self._params,
                put(arrays["input_ids"]),
                put(arrays["positions"]),
                put(arrays["segment_ids"]),
                jax.device_put(lengths, self._lengths_sharding),
            )
            out[start : start + real] = np.asarray(jax.device_get(rewards))[:real]
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


# ---- command line ------------------------------------------------------------------------------


def _row_responses(row, policy: bool) -> list[str]:
    responses = row.data.get("responses")
    if policy:
        if responses is not None:
            raise ValueError("has 'responses' but --policy samples them; drop one of the two")
        return []
    if not isinstance(responses, list) or not responses:
        raise ValueError("field 'responses' must be a non-empty list of strings (or pass --policy to sample)")
    bad = [k for k, r in enumerate(responses) if not isinstance(r, str)]
    if bad:
        raise ValueError(f"responses{bad} must be strings")
    return responses


def _sample(sampler, tokenizer, params, rows, n: int) -> list[list[str]]:
    """N responses per row in one batch; row at input line L, sample k uses seed (seed, L, k)."""
    from janus_jax.prompts import render_prompt_ids

    prompts, per_sample = [], []
    for row in rows:
        ids = render_prompt_ids(tokenizer, row.system, row.prompt)
        for k in range(n):
            prompts.append(ids)
            per_sample.append(dataclasses.replace(params, seed=(params.seed + row.line * n + k) % 2**32))
    texts = [c.text for c in sampler.generate(prompts, per_sample)]
    return [texts[i * n : (i + 1) * n] for i in range(len(rows))]


def run_file(args: argparse.Namespace) -> int:
    from janus_jax.generate import run_rows, sampling_from_args
    from janus_jax.prompts import render_prompt_ids

    settings = run_settings(args.rm)
    tokenizer = load_tokenizer(args.tokenizer if args.tokenizer is not None else settings["tokenizer"] or None)
    scorer = RewardScorer(
        load_reward_model(args.rm), tokenizer, max_length=args.max_length or settings["max_length"],
        batch_size=args.batch_size,
    )
    sampler = params = None
    if args.policy:
        from janus_jax.sample import Sampler
        from janus_jax.serve.loading import load_from_args

        params = sampling_from_args(args)
        hf = (Path(args.policy) / "config.json").is_file()
        policy = load_from_args(argparse.Namespace(
            hf=args.policy if hf else None, checkpoint=None if hf else args.policy, tokenizer=tokenizer.name,
            dtype=None, mesh=None, model_name=None,
        ))
        sampler = Sampler(policy.model, tokenizer, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)

    def prepare(row) -> list[str]:
        responses = _row_responses(row, sampler is not None)
        if not scorer.prompt_fits(row.system, row.prompt):
            raise ValueError(f"the prompt leaves no room for a response in {scorer.max_length} tokens")
        if sampler is not None:
            sampler.check_request(render_prompt_ids(tokenizer, row.system, row.prompt), params, row.line)
        return responses

    def process(batch) -> list[dict]:
        if sampler is not None:
            sampled = _sample(sampler, tokenizer, params, [row for row, _ in batch], args.n)
            batch = [(row, responses) for (row, _), responses in zip(batch, sampled, strict=True)]
        picks = select_best(scorer, [(row.system, row.prompt, responses) for row, responses in batch])
        return [
            {
                **row.data,
                "responses": responses,
                "rewards": pick.rewards,
                "best_index": pick.best_index,
                "best_response": pick.best_response,
            }
            for (row, responses), pick in zip(batch, picks, strict=True)
        ]

    rows_per_batch = max(1, args.batch_size // args.n) if sampler is not None else args.batch_size
    return run_rows(
        Path(args.input), Path(args.output), prepare, process, rows_per_batch=rows_per_batch, verb="scored"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from janus_jax.generate import add_sampling_args

    parser = argparse.ArgumentParser(prog="janus-best-of-n", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rm", required=True, metavar="DIR", help="reward model: a janus-train rm workdir")
    parser.add_argument("--input", required=True, help="JSONL rows with 'prompt', optional 'system', 'responses'")
    parser.add_argument("--output", required=True, help="JSONL file the selections are appended to (resumable)")
    parser.add_argument("--policy", metavar="DIR", help="sample the responses from this janus workdir or HF directory")
    parser.add_argument("--n", type=int, default=4, help="responses sampled per prompt (with --policy)")
    parser.add_argument("--tokenizer", help="default: the tokenizer the reward model was trained with")
    parser.add_argument("--max-length", type=int, default=0, help="tokens per scored sequence (default: RM seq_len)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences scored (or sampled) together")
    add_sampling_args(parser)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        return run_file(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"janus-best-of-n: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
