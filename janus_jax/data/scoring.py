"""(system, prompt, response) triples as reward-model rows, rendered and truncated exactly as RM training does."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from janus_jax.data.packing import EpochPlan, build_rows
from janus_jax.data.records import Example
from janus_jax.data.report import OVER_LENGTH_DROPPED, OVER_LENGTH_TRUNCATED, DataReport
from janus_jax.data.tokenized import tokenize_examples
from janus_jax.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class ScoringBatch(NamedTuple):
    start: int  # index of the batch's first triple
    real: int  # how many rows are triples (the rest pad the batch to a fixed size)
    arrays: dict[str, np.ndarray]  # input_ids, positions, segment_ids, ... [batch_size, width]
    lengths: np.ndarray  # real input positions per row (the reward is read at length - 1)


def scoring_batches(
    tokenizer: Tokenizer,
    triples: Sequence[tuple[str, str, str]],
    max_length: int,
    batch_size: int,
    template: str = "mistral_inst",
) -> Iterator[ScoringBatch]:
    """Fixed-size batches of the triples; widths are powers of two up to `max_length` (few shapes to compile).

    Raises ValueError naming the items whose prompt leaves no room for a response (training drops those).
    """
    examples = [Example(i, prompt, system, prompt, response) for i, (system, prompt, response) in enumerate(triples)]
    report = DataReport(over_length="truncate")
    store = tokenize_examples(tokenizer, examples, max_length, "truncate", report, "score", template)
    dropped = [i.row for i in report.issues if i.kind == OVER_LENGTH_DROPPED]
    if dropped:
        raise ValueError(f"items {dropped}: the prompt leaves no room for a response in {max_length} tokens")
    truncated = sum(1 for i in report.issues if i.kind == OVER_LENGTH_TRUNCATED)
    if truncated:
        log.info("%d responses truncated to %d tokens before scoring (as in training)", truncated, max_length)
    n = len(store)
    plan = EpochPlan(np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64))
    for start in range(0, n, batch_size):
        rows = range(start, start + batch_size)
        longest = int(store.lengths[start : start + batch_size].max()) - 1
        width = min(max_length, max(16, 1 << (longest - 1).bit_length()))
        arrays = build_rows(store, plan, rows, width, tokenizer.pad_id)
        lengths = np.ones(batch_size, np.int32)  # padding rows read position 0 and are discarded
        real = min(n, rows.stop) - start
        lengths[:real] = store.lengths[start : start + real] - 1
        yield ScoringBatch(start, real, arrays, lengths)
