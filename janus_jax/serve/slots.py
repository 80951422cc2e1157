"""Decode slots: a fixed set of rows sharing one KV cache, which requests join and leave between steps.

Why: with per-wave batching every request of a wave waits for the wave's longest reply, and a request
that arrives meanwhile waits for the whole wave. Here a finished row frees its slot at the next chunk
boundary, and a newcomer's prompt is prefilled into a free slot while the other rows keep their cache
and go on decoding (continuous batching).

Every per-row setting is an array (sampling knobs, seed, token budget, stop ids, how many tokens the
row has drawn, whether it wants top log-probs), so rows joining or leaving never recompile. The slot
count is fixed; the cache length grows (in bucketed steps) when a newcomer needs more room (the cache is
re-laid out, slot = position mod length, as `CacheWrite` places tokens) and keeps that length. Each
row draws token i with noise that depends only on (seed, i, token id), as in `Sampler`, so a seeded
request gets the same tokens from the server as from `Sampler.generate`.

A decode call computes only the slots that hold rows, gathered into the smallest width (`Slots.decode_width`)
that holds them: when most clients have been answered, or only one is there, a step costs what their rows
cost, not what the whole batch would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from janus_jax.model import KVCache
from janus_jax.model.layers import time_major
from janus_jax.sample import (
    DecodeSharding,
    GenerationJit,
    RowParams,
    Sampler,
    bucket,
    chosen_logprobs,
    decode_attention_scope,
    draw_tokens,
    prefill_cache,
    top_logprobs,
)

# The most top_logprobs a request may ask for (OpenAI's bound).
MAX_TOP_LOGPROBS = 20


class SlotState(NamedTuple):
    """Every slot's decode state; per-row arrays are [B, ...]. A free slot is a done row."""

    cache: KVCache
    last_token: jax.Array  # [B] the token fed on the next step
    next_position: jax.Array  # [B] its position
    seen: jax.Array  # [B, V] prompt and output tokens (repetition penalty)
    generated: jax.Array  # [B] tokens drawn so far (the index of the next draw)
    done: jax.Array  # [B]
    hit_stop: jax.Array  # [B] finished on a stop token (vs. the token budget)
    want_logprobs: jax.Array  # [B] the request asked for log-probs
    want_top: jax.Array  # [B] ... and for the top alternatives
    rows: RowParams


class Drawn(NamedTuple):
    """Tokens drawn by one call, [W, C] (W rows, C steps; a row's new tokens come first). Row i is slot
    `slots[i]` (the batch size B for an admission's padding rows)."""

    slots: jax.Array  # [W]
    tokens: jax.Array
    logprobs: jax.Array
    top_ids: jax.Array  # [W, C, MAX_TOP_LOGPROBS]
    top_logprobs: jax.Array
    generated: jax.Array  # [W] after the call
    done: jax.Array
    hit_stop: jax.Array


def _logprobs(
    logits: jax.Array, tokens: jax.Array, want_logprobs: jax.Array, want_top: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The chosen tokens' log-probs [B] (0 for rows that did not ask) and the top alternatives [B,
    MAX_TOP_LOGPROBS] (ids, log-probs), computed only when some row asked for them. Why: the log-normaliser
    is a pass over every row's vocabulary and the top-k another, a fifth of a full-width step of the tiny
    model on CPU, and most requests ask for neither."""
    batch = logits.shape[0]
    no_top = (jnp.zeros((batch, MAX_TOP_LOGPROBS), jnp.int32), jnp.zeros((batch, MAX_TOP_LOGPROBS), jnp.float32))

    def wanted(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        top = jax.lax.cond(jnp.any(want_top), lambda y: top_logprobs(y, MAX_TOP_LOGPROBS), lambda y: no_top, x)
        return jnp.where(want_logprobs, chosen_logprobs(x, tokens), 0.0), *top

    return jax.lax.cond(jnp.any(want_logprobs), wanted, lambda x: (jnp.zeros((batch,), jnp.float32), *no_top), logits)


def _is_stop(tokens: jax.Array, rows: RowParams) -> jax.Array:
    return jnp.any(tokens[:, None] == rows.stop_ids, axis=-1)


def _constrain(ss: SlotState, sharding: DecodeSharding | None) -> SlotState:
    return ss if sharding is None else ss._replace(cache=sharding.constrain_cache(ss.cache))


def _empty(
    config: Any, batch: int, cache_length: int, vocab: int, stop_slots: int, cache_dtype: Any, sharding: Any
) -> SlotState:
    from janus_jax.model import init_cache

    zeros_i = jnp.zeros((batch,), jnp.int32)
    rows = RowParams(
        temperature=jnp.zeros((batch,), jnp.float32),
        top_p=jnp.ones((batch,), jnp.float32),
        top_k=zeros_i,
        repetition_penalty=jnp.ones((batch,), jnp.float32),
        seed=jnp.zeros((batch,), jnp.uint32),
        max_new_tokens=jnp.ones((batch,), jnp.int32),
        stop_ids=jnp.full((batch, stop_slots), -1, jnp.int32),
    )
    ss = SlotState(
        cache=init_cache(config, batch_size=batch, max_length=cache_length, dtype=cache_dtype),
        last_token=zeros_i,
        next_position=zeros_i,
        seen=jnp.zeros((batch, vocab), bool),
        generated=zeros_i,
        done=jnp.ones((batch,), bool),
        hit_stop=jnp.zeros((batch,), bool),
        want_logprobs=jnp.zeros((batch,), bool),
        want_top=jnp.zeros((batch,), bool),
        rows=rows,
    )
    return _constrain(ss, sharding)


def _relayout(ss: SlotState, cache_length: int, sharding: Any) -> SlotState:
    """The same rows in a longer cache: every held position moves to slot `position mod cache_length`."""
    cache = ss.cache
    batch = cache.positions.shape[0]
    slots = jnp.where(cache.positions >= 0, cache.positions % cache_length, cache_length)
    rows = jnp.arange(batch)[:, None]

    def longer(layer: jax.Array) -> jax.Array:  # [B, KVH, S, D] -> [B, KVH, cache_length, D]
        shape = layer.shape[:2] + (cache_length,) + layer.shape[3:]
        return jnp.zeros(shape, layer.dtype).at[rows, :, slots].set(time_major(layer), mode="drop")

    new = KVCache(
        k=tuple(map(longer, cache.k)),
        v=tuple(map(longer, cache.v)),
        positions=jnp.full((batch, cache_length), -1, jnp.int32).at[rows, slots].set(cache.positions, mode="drop"),
    )
    return _constrain(ss._replace(cache=new), sharding)


def _admit(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    ss: SlotState,
    prompt_ids: jax.Array,
    prompt_lens: jax.Array,
    rows: RowParams,
    want_logprobs: jax.Array,
    want_top: jax.Array,
    slots: jax.Array,
    *,
    cache_dtype: Any,
    sharding: DecodeSharding | None,
) -> tuple[SlotState, Drawn]:
    """Prefill newcomers [N, T] and draw their first token; they take over `slots` (index B = padding row)."""
    model = nnx.merge(graphdef, state)
    n = prompt_ids.shape[0]
    cache, last, seen = prefill_cache(
        model, prompt_ids, prompt_lens, cache_length=ss.cache.length, cache_dtype=cache_dtype, sharding=sharding
    )
    first = jnp.zeros((n,), jnp.int32)
    tokens = draw_tokens(last, seen, rows, first)
    logprobs, top_ids, top_lps = _logprobs(last, tokens, want_logprobs, want_top)
    stop = _is_stop(tokens, rows)
    generated = first + 1
    done = stop | (generated >= rows.max_new_tokens)
    new = SlotState(
        cache=cache,
        last_token=tokens,
        next_position=prompt_lens.astype(jnp.int32),
        seen=seen.at[jnp.arange(n), tokens].set(True),
        generated=generated,
        done=done,
        hit_stop=stop,
        want_logprobs=want_logprobs,
        want_top=want_top,
        rows=rows,
    )

    def put(big: jax.Array, small: jax.Array) -> jax.Array:  # every array is [B, ...], the cache's too
        return big.at[slots].set(small, mode="drop")

    ss = _constrain(jax.tree.map(put, ss, new), sharding)
    drawn = Drawn(slots, tokens[:, None], logprobs[:, None], top_ids[:, None], top_lps[:, None], generated, done, stop)
    return ss, drawn


def _decode(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    all_slots: SlotState,
    release: jax.Array,
    order: jax.Array | None,
    *,
    steps: int,
    pad_id: int,
    sharding: DecodeSharding | None,
) -> tuple[SlotState, Drawn]:
    """Up to `steps` cached decode steps for every live slot of `order` (fewer when all are done).

    `order` [W] lists distinct slots to compute (None: all B, in order); the others keep their state. `release`
    [W] frees slots of `order` first (rows cut by a stop string, requests whose client went away).
    """
    model = nnx.merge(graphdef, state)
    if order is None:
        ss, order = all_slots, jnp.arange(all_slots.done.shape[0], dtype=jnp.int32)
    else:
        ss = _constrain(jax.tree.map(lambda x: x[order], all_slots), sharding)
    ss = ss._replace(done=ss.done | release)
    batch = ss.done.shape[0]
    out = Drawn(
        slots=order,
        tokens=jnp.full((batch, steps), pad_id, jnp.int32),
        logprobs=jnp.zeros((batch, steps), jnp.float32),
        top_ids=jnp.zeros((batch, steps, MAX_TOP_LOGPROBS), jnp.int32),
        top_logprobs=jnp.zeros((batch, steps, MAX_TOP_LOGPROBS), jnp.float32),
        generated=ss.generated,
        done=ss.done,
        hit_stop=ss.hit_stop,
    )

    def cond(carry: tuple[jax.Array, SlotState, Drawn]) -> jax.Array:
        i, ss, _ = carry
        return (i < steps) & ~jnp.all(ss.done)

    def body(carry: tuple[jax.Array, SlotState, Drawn]) -> tuple[jax.Array, SlotState, Drawn]:
        i, ss, out = carry
        live = ~ss.done
        logits, cache = model(
            ss.last_token[:, None],
            positions=ss.next_position[:, None],
            segment_ids=live.astype(jnp.int32)[:, None],
            cache=ss.cache,
        )
        if sharding is not None:
            cache = sharding.constrain_cache(cache)
        logits = logits[:, 0]
        # Free slots draw greedily without a penalty: they cannot push the batch onto the slow paths.
        rows = ss.rows._replace(
            temperature=jnp.where(live, ss.rows.temperature, 0.0),
            repetition_penalty=jnp.where(live, ss.rows.repetition_penalty, 1.0),
        )
        tokens = draw_tokens(logits, ss.seen, rows, ss.generated)
        logprobs, top_ids, top_lps = _logprobs(logits, tokens, live & ss.want_logprobs, live & ss.want_top)
        stop = live & _is_stop(tokens, rows)
        generated = ss.generated + live.astype(jnp.int32)
        ss = ss._replace(
            cache=cache,
            last_token=jnp.where(live, tokens, ss.last_token),
            next_position=ss.next_position + live.astype(jnp.int32),
            seen=ss.seen.at[jnp.arange(batch), tokens].max(live),
            generated=generated,
            done=ss.done | stop | (live & (generated >= rows.max_new_tokens)),
            hit_stop=ss.hit_stop | stop,
        )

        def write(buffer: jax.Array, value: jax.Array) -> jax.Array:
            value = jnp.where(live.reshape((batch,) + (1,) * (value.ndim - 1)), value, jnp.zeros_like(value))
            return jax.lax.dynamic_update_slice_in_dim(buffer, value[:, None].astype(buffer.dtype), i, axis=1)

        out = out._replace(
            tokens=write(out.tokens, jnp.where(live, tokens, pad_id)),
            logprobs=write(out.logprobs, logprobs),
            top_ids=write(out.top_ids, top_ids),
            top_logprobs=write(out.top_logprobs, top_lps),
        )
        return i + 1, ss, out

    with decode_attention_scope(sharding):
        _, ss, out = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), ss, out))
    out = out._replace(generated=ss.generated, done=ss.done, hit_stop=ss.hit_stop)
    if batch < all_slots.done.shape[0]:  # back into the donated whole, in place
        ss = _constrain(jax.tree.map(lambda whole, part: whole.at[order].set(part), all_slots, ss), sharding)
    return ss, out


_empty_jit = jax.jit(_empty, static_argnums=(0, 1, 2, 3, 4, 5, 6))
_relayout_jit = jax.jit(_relayout, static_argnums=(1, 2))  # new shapes: nothing to donate into
_admit_jit = GenerationJit(
    _admit, static_argnums=(0,), static_argnames=("cache_dtype", "sharding"), donate_argnums=(2,)
)
_decode_jit = GenerationJit(
    _decode, static_argnums=(0,), static_argnames=("steps", "pad_id", "sharding"), donate_argnums=(2,)
)


class Slots:
    """`batch` decode slots over a Sampler's model (same parameters, placement and bucketing rules).

    Newcomers are prefilled together, at most `prefill_rows` per call, padded to a power of two rows: admission
    compiles once per row bucket, prompt bucket and cache length rather than once per newcomer count, and a
    lone newcomer does not pay for the prefill of a full group. The cache length only grows over the
    server's life (to the longest request's buckets): a drained batch restarts at the same length, and
    few executables exist.
    """

    def __init__(self, sampler: Sampler, batch: int, *, prefill_rows: int = 16):
        self.sampler = sampler
        multiple = sampler.batch_multiple
        self.batch = -(-batch // multiple) * multiple
        self.prefill_rows = -(-min(prefill_rows, self.batch) // multiple) * multiple
        self.cache_length = 0
        self.state: SlotState | None = None  # built on first admission, dropped when the batch drains

    def needed_cache_length(self, prompt_len: int, max_new_tokens: int) -> int:
        """Cache slots a row needs: its prompt and reply buckets (as `Sampler.shapes`), or one sliding window.

        A sum of two powers of two, not the power of two above it: the cost of every decode step grows
        with the cache length.
        """
        s = self.sampler
        prompt_bucket = bucket(prompt_len, s.min_prompt_bucket)
        length = prompt_bucket + bucket(max_new_tokens, s.min_new_tokens_bucket)
        window = s.config.sliding_window
        if window is not None:
            length = max(prompt_bucket, min(length, bucket(window, 1)))
        return length

    def drain(self) -> None:
        """Forget the state (every slot is free); the next admission starts from an empty cache."""
        self.state = None

    def admit(
        self,
        slots: list[int],
        prompts: list[list[int]],
        rows: RowParams,
        want_logprobs: np.ndarray,
        want_top: np.ndarray,
        cache_length: int,
    ) -> Drawn:
        """Prefill at most `prefill_rows` prompts into the free `slots`, growing the cache to `cache_length`.
        `want_logprobs` and `want_top` [N]: which rows report log-probs and top alternatives."""
        s = self.sampler
        if len(prompts) > self.prefill_rows:
            raise ValueError(f"{len(prompts)} prompts, at most {self.prefill_rows} per admission")
        if self.state is None:
            self.cache_length = max(self.cache_length, cache_length)
            args = (s.config, self.batch, self.cache_length, s.config.vocab_size, s.stop_slots, s.cache_dtype)
            self.state = _empty_jit(*args, s.sharding)
        elif cache_length > self.cache_length:
            self.cache_length = cache_length
            self.state = _relayout_jit(self.state, cache_length, s.sharding)
        multiple = s.batch_multiple
        n = min(self.prefill_rows, -(-bucket(len(prompts), 1) // multiple) * multiple)
        ids = np.full((n, bucket(max(map(len, prompts)), s.min_prompt_bucket)), s.pad_id, np.int32)
        lens = np.ones((n,), np.int32)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = p
            lens[i] = len(p)
        where = np.full((n,), self.batch, np.int32)  # padding rows land nowhere
        where[: len(slots)] = slots
        wants = np.zeros((2, n), bool)
        wants[:, : len(prompts)] = want_logprobs, want_top
        padded = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[:1], n - len(prompts), axis=0)]), rows)
        args = s._to_device((ids, lens, padded, wants[0], wants[1], where))
        self.state, drawn = _admit_jit(
            s.graphdef, s.state, self.state, *args, cache_dtype=s.cache_dtype, sharding=s.sharding
        )
        return drawn

    def decode_width(self, rows: int) -> int:
        """Slots one decode call computes for `rows` occupied slots: the smallest of 1, 2, 4, 8, 16, 24, 32, 48, 64,
        96, ... (powers of two, and from 32 on the 3/4 points between them) that holds them, rounded up to a
        multiple of the data shards, or the whole batch.

        Why down to one row: a lone client (the common case of one person chatting) would otherwise pay for
        the narrowest width's rows at every step (tiny model, CPU: 0.65 ms a step at width 1, 3.5 ms at 16).
        Why the 3/4 points: when the rows just spill over a power of two, a step costs a quarter less, for
        one more program per octave where steps are dearest. Each width compiles once, at its first use.
        """
        width = bucket(rows, 1)
        if width >= 32 and rows <= width * 3 // 4:
            width = width * 3 // 4
        multiple = self.sampler.batch_multiple
        return min(-(-width // multiple) * multiple, self.batch)

    def decode(self, release: np.ndarray, steps: int, occupied: Sequence[int] | None = None) -> Drawn:
        """Up to `steps` decode steps; `release` [B] frees slots first. With `occupied` (the slots holding rows,
        the released ones included), only those are computed, with free slots as padding up to the width."""
        s = self.sampler
        order = None
        if occupied is not None and (width := self.decode_width(len(occupied))) < self.batch:
            taken = set(occupied)
            padding = [slot for slot in range(self.batch) if slot not in taken][: width - len(taken)]
            order = np.array(sorted(taken) + padding, np.int32)
            release = release[order]
        args = s._to_device((release, order))
        self.state, drawn = _decode_jit(
            s.graphdef, s.state, self.state, *args, steps=steps, pad_id=s.pad_id, sharding=s.sharding
        )
        return drawn

    @staticmethod
    def compilations() -> int:
        """Executables compiled so far for admission and decoding (recompilation tests)."""
        return _admit_jit._cache_size() + _decode_jit._cache_size()
