"""Training and eval batches as a pure function of the step.

`batch(step)` depends only on (data, seed, step, process index/count): resuming a run needs nothing but the
step number, and any step can be rebuilt cheaply. Each step takes `global_batch_size` rows of the epoch's
plan; process p of P gets rows [p * B/P, (p + 1) * B/P) of that global batch, ready for
`jax.make_array_from_process_local_data`.

The last step of an epoch is filled up to a full batch: SFT with all-padding rows (loss weight 0, so a
token-weighted loss is exact), preference data with copies of a real pair marked `pair_weights = 0`, so every
row stays a valid sequence for the objective. Nothing is dropped and the shapes never change.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from dataclasses import dataclass

import ml_collections
import numpy as np

from janus_jax.data.packing import EpochPlan, build_rows, plan_epoch
from janus_jax.data.records import (
    SYSTEM_MESSAGE_POLICIES,
    Example,
    Pair,
    detect_format,
    validate,
    with_system_message,
)
from janus_jax.data.report import DataReport
from janus_jax.data.sources import load_rows
from janus_jax.data.tokenized import TokenizedExamples, tokenize_examples, tokenize_pairs
from janus_jax.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


class _StepMap:
    """Steps over epochs, and this process's slice of each global batch."""

    def __init__(self, plans: list[EpochPlan], global_batch_size: int, process_index: int, process_count: int):
        if global_batch_size <= 0:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
        if process_count <= 0 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
        if global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size {global_batch_size} is not divisible by the process count {process_count}"
            )
        self.plans = plans
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.process_index = process_index
        self.process_count = process_count
        self.epoch_steps = tuple(math.ceil(p.num_rows / global_batch_size) for p in plans)
        self._first_step = np.cumsum((0, *self.epoch_steps))

    @property
    def num_epochs(self) -> int:
        return len(self.plans)

    @property
    def steps_per_epoch(self) -> int:
        """Steps of the first epoch. Packed epochs can differ by a step (`epoch_steps` has each)."""
        return self.epoch_steps[0]

    @property
    def total_steps(self) -> int:
        return int(self._first_step[-1])

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, step within that epoch) of a global step."""
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} is outside [0, {self.total_steps}) ({self.num_epochs} epochs)")
        epoch = int(np.searchsorted(self._first_step, step, side="right") - 1)
        return epoch, step - int(self._first_step[epoch])

    def local_rows(self, step_in_epoch: int) -> range:
        start = step_in_epoch * self.global_batch_size + self.process_index * self.local_batch_size
        return range(start, start + self.local_batch_size)

    def __iter__(self):
        for step in range(self.total_steps):
            yield self.batch(step)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        raise NotImplementedError


class SFTPipeline(_StepMap):
    """SFT batches: `input_ids, targets, loss_weights, positions, segment_ids`, each [local_batch, seq_len]."""

    def __init__(self, store: TokenizedExamples, *, seq_len: int, packing: bool, global_batch_size: int,
                 num_epochs: int, seed: int, pad_id: int, shuffle: bool = True, process_index: int = 0,
                 process_count: int = 1):
        if len(store) == 0:
            raise ValueError("the SFT dataset is empty: no example survived validation (see the data report)")
        plans = [plan_epoch(store, seq_len, seed, e, shuffle=shuffle, packing=packing) for e in range(num_epochs)]
        super().__init__(plans, global_batch_size, process_index, process_count)
        self.store, self.seq_len, self.packing, self.pad_id = store, seq_len, packing, pad_id

    @property
    def packing_efficiency(self) -> float:
        """Real tokens / row capacity over the first epoch."""
        real = int((self.store.lengths - 1).sum())
        return real / (self.plans[0].num_rows * self.seq_len)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        epoch, s = self.locate(step)
        return build_rows(self.store, self.plans[epoch], self.local_rows(s), self.seq_len, self.pad_id)


class PairPipeline(_StepMap):
    """Preference batches: both sides of a pair in the same row of the same batch.

    Keys: `{chosen,rejected}_{input_ids,targets,loss_weights,positions,segment_ids}` [B, seq_len] (loss weights
    cover response + EOS targets; full-sequence NLL weights are `segment_ids > 0`), `chosen_lengths` /
    `rejected_lengths` [B] (real input positions; the last real input is at `length - 1`), `prompt_lengths` [B]
    (BOS + prompt tokens; the first response target sits at input position `prompt_length - 1`), `pair_weights`
    [B] float32 (0 for the copies that fill the last batch of an epoch), and `pair_ids` [B] (index of the pair in
    the tokenized dataset, e.g. to look up precomputed reference log-probs).
    """

    def __init__(self, chosen: TokenizedExamples, rejected: TokenizedExamples, *, seq_len: int,
                 global_batch_size: int, num_epochs: int, seed: int, pad_id: int, shuffle: bool = True,
                 process_index: int = 0, process_count: int = 1):
        if len(chosen) == 0:
            raise ValueError("the preference dataset is empty: no pair survived validation (see the data report)")
        if len(chosen) != len(rejected):
            raise ValueError(f"{len(chosen)} chosen but {len(rejected)} rejected sequences")
        plans = [plan_epoch(chosen, seq_len, seed, e, shuffle=shuffle, packing=False) for e in range(num_epochs)]
        super().__init__(plans, global_batch_size, process_index, process_count)
        self.chosen, self.rejected, self.seq_len, self.pad_id = chosen, rejected, seq_len, pad_id

    def batch(self, step: int) -> dict[str, np.ndarray]:
        epoch, s = self.locate(step)
        plan = self.plans[epoch]
        rows = self.local_rows(s)
        real = np.array([r < plan.num_rows for r in rows])
        # Filler rows repeat the epoch's first pair with weight 0, so every row is a valid sequence.
        pair_ids = np.array([plan.order[r] if r < plan.num_rows else plan.order[0] for r in rows], np.int64)
        filled = EpochPlan(pair_ids, np.arange(len(pair_ids) + 1, dtype=np.int64))
        out: dict[str, np.ndarray] = {}
        for side, store in (("chosen", self.chosen), ("rejected", self.rejected)):
            arrays = build_rows(store, filled, range(len(pair_ids)), self.seq_len, self.pad_id)
            out.update({f"{side}_{k}": v for k, v in arrays.items()})
            out[f"{side}_lengths"] = (store.lengths[pair_ids] - 1).astype(np.int32)
        out["prompt_lengths"] = self.chosen.prompt_lengths[pair_ids].astype(np.int32)
        out["pair_weights"] = real.astype(np.float32)
        out["pair_ids"] = pair_ids.astype(np.int32)
        return out


@dataclass
class DataBundle:
    """What the trainer gets: train/eval pipelines (eval is None without a held-out set) and the report."""

    train: SFTPipeline | PairPipeline
    eval: SFTPipeline | PairPipeline | None
    report: DataReport
    tokenizer: Tokenizer
    format: str


def _stable_key(*parts: object) -> str:
    return hashlib.sha1("\x00".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def select_system_messages(examples: list[Example], k: int) -> list[Example]:
    """Keep k system messages per instruction, chosen by a hash of the system text (independent of row order)."""
    if k not in (1, 2, 3):
        raise ValueError(f"data.system_messages_per_instruction must be 1, 2 or 3, got {k}")
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        groups[e.instruction].append(e)
    keep = set()
    for group in groups.values():
        keep.update(e.row for e in sorted(group, key=lambda e: _stable_key(e.system, e.response))[:k])
    return [e for e in examples if e.row in keep]


def apply_system_message_policy(records: list[Example] | list[Pair], policy: str,
                                generic_text: str) -> list[Example] | list[Pair]:
    """Records carrying the system message `policy` asks for (see `data.system_message_policy`)."""
    if policy not in SYSTEM_MESSAGE_POLICIES:
        raise ValueError(f"data.system_message_policy must be one of {SYSTEM_MESSAGE_POLICIES}, got {policy!r}")
    if policy == "as_is":
        return records
    if policy == "generic" and not generic_text.strip():
        raise ValueError("data.system_message_policy='generic' needs a non-empty data.generic_system_message")
    text = generic_text if policy == "generic" else ""
    return [with_system_message(r, text) for r in records]


def split_off_eval(records: list[Example] | list[Pair], fraction: float, seed: int) -> tuple[list, list]:
    """(train, eval) by instruction, so no eval prompt is seen in training; eval gets at least one instruction."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.eval_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return records, []
    instructions = sorted({r.instruction for r in records}, key=lambda s: _stable_key(seed, s))
    n_eval = max(1, round(fraction * len(instructions)))
    held_out = set(instructions[:n_eval])
    return [r for r in records if r.instruction not in held_out], [r for r in records if r.instruction in held_out]


def _read(source: str, split: str, fmt: str, report: DataReport, report_split: str) -> tuple[list, str]:
    rows = load_rows(source, split, report, report_split)
    report.rows_read[report_split] = len(rows)
    fmt = fmt or detect_format(rows)
    return validate(rows, fmt, report, report_split), fmt


def build_data(cfg: ml_collections.ConfigDict, *, global_batch_size: int, num_epochs: int,
               process_index: int | None = None, process_count: int | None = None,
               tokenizer: Tokenizer | None = None, expect: str | None = None) -> DataBundle:
    """Read, validate, tokenize and plan the data of `config.data`.

    `expect` = "sft" or "pairs" checks that the data suits the objective. Raises before any compilation
    when nothing usable is left. Process index/count default to JAX's.
    """
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    tok = tokenizer or load_tokenizer(cfg.tokenizer or None)
    report = DataReport(source=cfg.source, over_length=cfg.over_length)

    records, fmt = _read(cfg.source, cfg.split, cfg.format, report, "train")
    if cfg.eval_source and cfg.eval_fraction:
        raise ValueError("set either data.eval_source or data.eval_fraction, not both")
    eval_records: list = []
    if cfg.eval_source:
        eval_records, _ = _read(cfg.eval_source, cfg.eval_split or cfg.split, fmt, report, "eval")
    report.format = fmt
    kind = "sft" if fmt == "sft" else "pairs"
    if expect is not None and expect != kind:
        raise ValueError(f"the objective needs {expect} data but {cfg.source} is in the {fmt!r} format")
    if kind == "pairs" and cfg.packing:
        raise ValueError(f"data.packing applies to SFT data only; set data.packing=False for {fmt!r} data")

    # The hold-out is drawn from all instructions first: every subsampling and policy below changes the
    # training rows only, so runs that differ in them are scored on the same held-out rows.
    if not cfg.eval_source:
        records, eval_records = split_off_eval(records, cfg.eval_fraction, cfg.seed)
    if kind == "sft":
        before = len(records)
        records = select_system_messages(records, cfg.system_messages_per_instruction)
        report.not_selected = before - len(records)
    records = apply_system_message_policy(records, cfg.system_message_policy, cfg.generic_system_message)

    common = dict(seq_len=cfg.seq_len, global_batch_size=global_batch_size, seed=cfg.seed, pad_id=tok.pad_id,
                  process_index=process_index, process_count=process_count)
    pipelines: dict[str, SFTPipeline | PairPipeline | None] = {"train": None, "eval": None}
    for split, recs in (("train", records), ("eval", eval_records)):
        report.instructions[split] = len({r.instruction for r in recs})
        if split == "eval" and not recs:
            if cfg.eval_source:
                raise ValueError(f"the eval source {cfg.eval_source} has no usable rows (see the data report)")
            continue
        epochs, shuffle = (num_epochs, True) if split == "train" else (1, False)
        if kind == "sft":
            store = tokenize_examples(tok, recs, cfg.seq_len, cfg.over_length, report, split, cfg.template)
            report.examples[split] = len(store)
            report.tokens[split] = int((store.lengths - 1).sum())
            if len(store):
                pipelines[split] = SFTPipeline(store, packing=cfg.packing, num_epochs=epochs, shuffle=shuffle,
                                               **common)
        else:
            chosen, rejected = tokenize_pairs(tok, recs, cfg.seq_len, cfg.over_length, report, split, cfg.template)
            report.examples[split] = len(chosen)
            report.tokens[split] = int((chosen.lengths - 1).sum() + (rejected.lengths - 1).sum())
            if len(chosen):
                pipelines[split] = PairPipeline(chosen, rejected, num_epochs=epochs, shuffle=shuffle, **common)
    report.log(log)
    if pipelines["train"] is None:
        shown = "; ".join(str(i) for i in report.issues[:5]) or "no rows"
        raise ValueError(f"no usable training examples in {cfg.source} ({report.rows_read.get('train', 0)} rows "
                         f"read; first problems: {shown})")
    return DataBundle(pipelines["train"], pipelines["eval"], report, tok, fmt)
