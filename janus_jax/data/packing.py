"""Epoch order, packing, and the batch arrays built from them.

The order of an epoch is a pure function of (seed, epoch): a seeded permutation of the examples, then
greedy packing in that order (a row is closed when the next example does not fit). Each document in a row
gets its own segment id (1, 2, ...; 0 = padding) and positions that restart at 0, so attention and RoPE
never cross a document boundary, and neither does any target (`inputs = ids[:-1]`, `targets = ids[1:]`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from janus_jax.data.tokenized import TokenizedExamples

SFT_KEYS = ("input_ids", "targets", "loss_weights", "positions", "segment_ids")


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Example indices in the order of `epoch`; depends on nothing but its arguments."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def greedy_pack(positions_needed: np.ndarray, seq_len: int) -> np.ndarray:
    """Row boundaries for examples taken in order: row r holds items `starts[r]:starts[r + 1]`."""
    starts = [0]
    used = 0
    for i, n in enumerate(positions_needed.tolist()):
        if used + n > seq_len:
            starts.append(i)
            used = 0
        used += n
    starts.append(len(positions_needed))
    return np.asarray(starts if len(positions_needed) else [0], dtype=np.int64)


@dataclass(frozen=True)
class EpochPlan:
    """The rows of one epoch: row r holds examples `order[row_starts[r]:row_starts[r + 1]]`."""

    order: np.ndarray
    row_starts: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.row_starts) - 1

    def row(self, r: int) -> np.ndarray:
        return self.order[self.row_starts[r] : self.row_starts[r + 1]]


def plan_epoch(store: TokenizedExamples, seq_len: int, seed: int, epoch: int, *, shuffle: bool,
               packing: bool) -> EpochPlan:
    order = epoch_order(len(store), seed, epoch, shuffle)
    if packing:
        return EpochPlan(order, greedy_pack(store.lengths[order] - 1, seq_len))
    return EpochPlan(order, np.arange(len(order) + 1, dtype=np.int64))


def empty_rows(num_rows: int, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    shape = (num_rows, seq_len)
    return {
        "input_ids": np.full(shape, pad_id, np.int32),
        "targets": np.full(shape, pad_id, np.int32),
        "loss_weights": np.zeros(shape, np.float32),
        "positions": np.zeros(shape, np.int32),
        "segment_ids": np.zeros(shape, np.int32),
    }


def put_example(out: dict[str, np.ndarray], b: int, start: int, ids: np.ndarray, prompt_len: int,
                segment: int) -> int:
    """Write one example into row b from column `start` in next-token form; returns the next free column."""
    n = len(ids) - 1
    end = start + n
    out["input_ids"][b, start:end] = ids[:-1]
    out["targets"][b, start:end] = ids[1:]
    # Target t is ids[t + 1]; it is a response (or EOS) token when t + 1 >= prompt_len.
    out["loss_weights"][b, start:end] = (np.arange(1, n + 1) >= prompt_len).astype(np.float32)
    out["positions"][b, start:end] = np.arange(n, dtype=np.int32)
    out["segment_ids"][b, start:end] = segment
    return end


def build_rows(store: TokenizedExamples, plan: EpochPlan, rows: range, seq_len: int,
               pad_id: int) -> dict[str, np.ndarray]:
    """Arrays [len(rows), seq_len] for the given rows of the plan; rows past the end are all padding."""
    out = empty_rows(len(rows), seq_len, pad_id)
    for b, r in enumerate(rows):
        if r >= plan.num_rows:
            continue
        col = 0
        for segment, i in enumerate(plan.row(r).tolist(), start=1):
            col = put_example(out, b, col, store.ids(i), int(store.prompt_lengths[i]), segment)
    return out
