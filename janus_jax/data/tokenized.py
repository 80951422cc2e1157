"""Tokenize records into flat int32 arrays, applying the prompt template and the sequence-length policy.

An example is `[BOS] + prompt + response + [EOS]`, the prompt and response rendered by the template
(`data.template`, see `janus_jax.prompts`). Batches use next-token form
(`inputs = ids[:-1]`, `targets = ids[1:]`), so an example of n ids fills n - 1 positions and fits a row of
`seq_len` when n - 1 <= seq_len. Longer examples are either dropped or truncated at the end of the response
(`over_length`). A truncated example keeps its first `seq_len + 1` ids and so loses its EOS: the model is
never taught to stop where the cut fell. When not even one response token fits, the example is dropped in
both modes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from janus_jax.data.records import Example, Pair
from janus_jax.data.report import OVER_LENGTH_DROPPED, OVER_LENGTH_TRUNCATED, DataReport
from janus_jax.prompts import DEFAULT_TEMPLATE, get_template, rm_prompt_text
from janus_jax.tokenizer import Tokenizer

OVER_LENGTH_POLICIES = ("truncate", "drop")
ENCODE_CHUNK = 4096


@dataclass(frozen=True)
class TokenizedExamples:
    """Examples stored back to back: example i is `tokens[offsets[i]:offsets[i + 1]]`.

    `prompt_lengths[i]` counts BOS + prompt tokens; the loss covers every later token.
    """

    tokens: np.ndarray  # int32 [total]
    offsets: np.ndarray  # int64 [n + 1]
    prompt_lengths: np.ndarray  # int32 [n]
    rows: np.ndarray  # int64 [n], index of the source row

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    @property
    def lengths(self) -> np.ndarray:
        """Ids per example (BOS..EOS); each fills `lengths - 1` positions in a batch row."""
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def fingerprint(self) -> str:
        """Content hash of the token arrays (e.g. to key reference log-probs stored beside the data)."""
        h = hashlib.sha256()
        for a in (self.tokens, self.offsets, self.prompt_lengths):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def encode_texts(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids per text as int32 arrays, in chunks so large datasets never hold Python int lists."""
    out: list[np.ndarray] = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        out.extend(np.asarray(ids, dtype=np.int32) for ids in tok.encode_batch(texts[start : start + ENCODE_CHUNK]))
    return out


def _fit(n_prompt: int, n_response: int, seq_len: int, over_length: str) -> int:
    """Ids kept of BOS + prompt + response + EOS: all of them, a truncated prefix, or 0 (drop)."""
    n = 1 + n_prompt + n_response + 1
    if n - 1 <= seq_len:
        return n
    if over_length == "truncate" and n_prompt + 1 <= seq_len:
        return seq_len + 1
    return 0


def _assemble(tok: Tokenizer, prompts: list[np.ndarray], responses: list[np.ndarray], keep: list[int],
              rows: list[int]) -> TokenizedExamples:
    bos, eos = np.array([tok.bos_id], np.int32), np.array([tok.eos_id], np.int32)
    pieces = []
    for p, r, n in zip(prompts, responses, keep, strict=True):
        pieces.append(np.concatenate([bos, p, r, eos])[:n])
    lengths = np.array([len(x) for x in pieces], dtype=np.int64)
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    prompt_lengths = np.array([1 + len(p) for p in prompts], dtype=np.int32)
    return TokenizedExamples(tokens, offsets, prompt_lengths, np.asarray(rows, dtype=np.int64))


def _check_policy(seq_len: int, over_length: str) -> None:
    if over_length not in OVER_LENGTH_POLICIES:
        raise ValueError(f"data.over_length must be one of {OVER_LENGTH_POLICIES}, got {over_length!r}")
    if seq_len < 2:
        raise ValueError(f"data.seq_len must be at least 2, got {seq_len}")


def _note(report: DataReport, split: str, row: int, label: str, n_full: int, n_kept: int, seq_len: int) -> None:
    if n_kept == 0:
        report.add(split, row, OVER_LENGTH_DROPPED, f"{label}{n_full - 1} tokens > seq_len {seq_len}")
    elif n_kept < n_full:
        report.add(split, row, OVER_LENGTH_TRUNCATED,
                   f"{label}{n_full - 1} tokens > seq_len {seq_len}, response cut by {n_full - n_kept} tokens")


def pair_prompt_text(pair: Pair, template: str) -> str:
    """The prompt part of a pair: DPO-schema rows from their system message and prompt, RM-schema rows from
    their `input` as one user turn."""
    if pair.prompt is not None:
        return get_template(template).prompt_text(pair.system or "", pair.prompt)
    return rm_prompt_text(pair.instruction, template)


def tokenize_examples(tok: Tokenizer, examples: list[Example], seq_len: int, over_length: str,
                      report: DataReport, split: str, template: str = DEFAULT_TEMPLATE) -> TokenizedExamples:
    """SFT examples -> token store; over-length examples are truncated or dropped and reported."""
    _check_policy(seq_len, over_length)
    t = get_template(template)
    prompts = encode_texts(tok, [t.prompt_text(e.system, e.prompt) for e in examples])
    responses = encode_texts(tok, [t.reply_text(e.response) for e in examples])
    kept = ([], [], [], [])
    for e, p, r in zip(examples, prompts, responses, strict=True):
        n = _fit(len(p), len(r), seq_len, over_length)
        _note(report, split, e.row, "", len(p) + len(r) + 2, n, seq_len)
        if n:
            for lst, v in zip(kept, (p, r, n, e.row), strict=True):
                lst.append(v)
    return _assemble(tok, *kept)


def tokenize_pairs(tok: Tokenizer, pairs: list[Pair], seq_len: int, over_length: str, report: DataReport,
                   split: str, template: str = DEFAULT_TEMPLATE) -> tuple[TokenizedExamples, TokenizedExamples]:
    """Preference pairs -> (chosen store, rejected store), aligned index by index.

    A pair is dropped when either side must be dropped; each side is truncated on its own otherwise.
    """
    _check_policy(seq_len, over_length)
    t = get_template(template)
    prompts = encode_texts(tok, [pair_prompt_text(p, template) for p in pairs])
    chosen = encode_texts(tok, [t.reply_text(p.chosen) for p in pairs])
    rejected = encode_texts(tok, [t.reply_text(p.rejected) for p in pairs])
    kept = ([], [], [], [], [], [])
    for pair, p, c, r in zip(pairs, prompts, chosen, rejected, strict=True):
        nc = _fit(len(p), len(c), seq_len, over_length)
        nr = _fit(len(p), len(r), seq_len, over_length)
        if nc == 0 or nr == 0:
            side = "chosen" if nc == 0 else "rejected"
            full = len(p) + (len(c) if nc == 0 else len(r)) + 2
            _note(report, split, pair.row, f"{side}: ", full, 0, seq_len)
            continue
        _note(report, split, pair.row, "chosen: ", len(p) + len(c) + 2, nc, seq_len)
        _note(report, split, pair.row, "rejected: ", len(p) + len(r) + 2, nr, seq_len)
        for lst, v in zip(kept, (p, c, r, nc, nr, pair.row), strict=True):
            lst.append(v)
    p, c, r, nc, nr, rows = kept
    return _assemble(tok, p, c, nc, rows), _assemble(tok, p, r, nr, rows)
