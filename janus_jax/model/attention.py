"""One attention function, a reference XLA path and fused cuDNN (GPU) and splash (TPU) paths behind it.

Masks are built from positions and segment ids rather than from array indices, so the same code
serves packed training rows (several documents per row), KV-cache decoding (keys from earlier
calls) and sliding windows. Segment id 0 marks padding / empty cache slots.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from janus_jax.model import cpu_decode_attention

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(
    q_positions: jax.Array,
    kv_positions: jax.Array,
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    sliding_window: int | None,
) -> jax.Array:
    """[B, T, S] bool: same non-padding segment, causal by position, inside the window."""
    qp, kp = q_positions[:, :, None], kv_positions[:, None, :]
    mask = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (kv_segment_ids[:, None, :] != 0)
    mask &= kp <= qp
    if sliding_window is not None:
        mask &= qp - kp < sliding_window
    return mask


def _to_groups(x: jax.Array, kv_heads: int) -> jax.Array:
    """[B, T, H, D] -> [B, K, T*G, D]: each KV head's G query heads, time-major, so that a block of
    consecutive tokens is a contiguous slice."""
    b, t, h, d = x.shape
    x = x.reshape(b, t, kv_heads, h // kv_heads, d).transpose(0, 2, 1, 3, 4)
    return x.reshape(b, kv_heads, t * (h // kv_heads), d)


def _from_groups(x: jax.Array, t: int) -> jax.Array:
    """Inverse of `_to_groups`: [B, K, T*G, D] -> [B, T, K*G, D]."""
    b, kv_heads, tg, d = x.shape
    x = x.reshape(b, kv_heads, t, tg // t, d).transpose(0, 2, 1, 3, 4)
    return x.reshape(b, t, kv_heads * (tg // t), d)


def _masked_scores(q_groups: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled float32 scores [B, K, T*G, S] of grouped queries against k [B, S, K, D], masked."""
    b, kv_heads, tg, d = q_groups.shape
    t = mask.shape[1]
    scores = jnp.einsum("bkqd,bskd->bkqs", q_groups, k, preferred_element_type=jnp.float32) * (d**-0.5)
    scores = jnp.where(mask[:, None, :, None, :], scores.reshape(b, kv_heads, t, tg // t, -1), _MASKED)
    return scores.reshape(b, kv_heads, tg, -1)


def _softmax_stats(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Row max and 1 / Σ exp(s − max), the latter 0 on rows that may attend to no key (padding queries),
    whose output is then 0 rather than an average over whichever keys a block happened to score. Kept
    apart rather than folded into one log-normaliser, whose max + log(sum) would round back to the max
    on such rows."""
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    total = jnp.sum(jnp.exp(scores - row_max), axis=-1, keepdims=True)
    return row_max, jnp.where(row_max > _MASKED, 1.0 / total, 0.0)


def _blocks(t: int, causal_blocks: int) -> list[tuple[int, int]]:
    """Query blocks [start, end) in tokens; with causal blocking each one scores keys [0, end) only."""
    edges = np.linspace(0, t, causal_blocks + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _concat(parts: list[jax.Array]) -> jax.Array:
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=2)


def _key_range(start: int, end: int, kv_len: int, causal_blocks: int, window: int | None) -> slice:
    """The keys a query block [start, end) can see: all of them unblocked; else those up to its end and,
    with a window, from the window's start for its first query."""
    if causal_blocks == 1:
        return slice(0, kv_len)
    return slice(0 if window is None else max(0, start - window + 1), end)


def _attention_forward(q, k, v, mask, causal_blocks: int, window: int | None):
    t, kv_len = q.shape[1], k.shape[1]
    group = q.shape[2] // k.shape[2]
    q_groups = _to_groups(q, k.shape[2])
    outs, maxes, inverse_sums = [], [], []
    for start, end in _blocks(t, causal_blocks):
        keys = _key_range(start, end, kv_len, causal_blocks, window)
        scores = _masked_scores(q_groups[:, :, start * group : end * group], k[:, keys], mask[:, start:end, keys])
        row_max, inverse_sum = _softmax_stats(scores)
        probs = (jnp.exp(scores - row_max) * inverse_sum).astype(v.dtype)
        out = jnp.einsum("bkqs,bskd->bkqd", probs, v[:, keys], preferred_element_type=jnp.float32)
        outs.append(out.astype(q.dtype))
        maxes.append(row_max)
        inverse_sums.append(inverse_sum)
    out = _concat(outs)
    return _from_groups(out, t), (q_groups, k, v, mask, out, _concat(maxes), _concat(inverse_sums))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, mask, causal_blocks: int, window: int | None) -> jax.Array:
    return _attention_forward(q, k, v, mask, causal_blocks, window)[0]


def _attention_backward(causal_blocks: int, window: int | None, residuals, d_out: jax.Array):
    q_groups, k, v, mask, out, row_max, inverse_sum = residuals
    t, kv_len, d = mask.shape[1], k.shape[1], q_groups.shape[-1]
    group = q_groups.shape[2] // t
    d_out_groups = _to_groups(d_out, k.shape[2])
    # Softmax backward: dS = P * (dP - rowsum(dO * O)).
    row_dot = jnp.sum(d_out_groups.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    dq_parts, dk, dv = [], jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)
    for start, end in _blocks(t, causal_blocks):
        keys = _key_range(start, end, kv_len, causal_blocks, window)
        rows = slice(start * group, end * group)
        q_block, d_out_block = q_groups[:, :, rows], d_out_groups[:, :, rows]
        scores = _masked_scores(q_block, k[:, keys], mask[:, start:end, keys])
        probs = jnp.exp(scores - row_max[:, :, rows]) * inverse_sum[:, :, rows]
        dv_block = jnp.einsum("bkqs,bkqd->bskd", probs.astype(v.dtype), d_out_block, preferred_element_type=jnp.float32)
        d_probs = jnp.einsum("bkqd,bskd->bkqs", d_out_block, v[:, keys], preferred_element_type=jnp.float32)
        d_scores = (probs * (d_probs - row_dot[:, :, rows]) * (d**-0.5)).astype(q_groups.dtype)
        dq_parts.append(jnp.einsum("bkqs,bskd->bkqd", d_scores, k[:, keys], preferred_element_type=jnp.float32))
        dk_block = jnp.einsum("bkqs,bkqd->bskd", d_scores, q_block, preferred_element_type=jnp.float32)
        dk, dv = dk.at[:, keys].add(dk_block), dv.at[:, keys].add(dv_block)
    dq = _from_groups(_concat(dq_parts).astype(q_groups.dtype), t)
    return dq, dk.astype(k.dtype), dv.astype(v.dtype), None


_attention.defvjp(_attention_forward, _attention_backward)


def xla_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, causal_blocks: int = 1, window: int | None = None
) -> jax.Array:
    """Reference path. q [B,T,H,D], k/v [B,S,K,D] with H a multiple of K (GQA), mask [B,T,S].

    Softmax in float32. The gradient is written by hand, as flash attention's is: the forward pass
    keeps only its output and the softmax row statistics, and the backward pass recomputes the
    probabilities from q and k. Autodiff would keep the [B, H, T, S] probabilities of every layer
    until the backward pass instead, and on CPU it spends much of the step transposing them.

    ``causal_blocks > 1`` is for self-attention over one sequence (S == T): keys after a query's own
    index are masked too (as cuDNN's ``is_causal``; a no-op for the pipeline's rows, whose positions grow
    by one within each segment), and the queries are cut into that many blocks, each scoring only the keys
    up to its own end, which skips most of the masked upper triangle: (n + 1) / 2n of the score FLOPs
    and of the largest score buffer. With a sliding ``window`` as well, keys more than ``window - 1``
    indices back are masked too and each block also skips the keys before its first query's window
    (with one block, ``window`` is not used: the mask carries it).
    """
    if causal_blocks > 1:
        t, kv_len = q.shape[1], k.shape[1]
        if kv_len != t:
            raise ValueError(f"causal_blocks={causal_blocks} needs as many keys as queries, got {kv_len} and {t}")
        back = jnp.arange(t)[:, None] - jnp.arange(t)[None, :]  # query index - key index
        mask = mask & (back >= 0) & (True if window is None else back < window)
    else:
        window = None  # one block scores every key; the mask alone carries any window
    return _attention(q, k, v, mask, causal_blocks, window)


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """One query token per row against a layer's KV cache: q [B, 1, H, D], k/v [B, K, S, D] (head-major, H a
    multiple of K), mask [B, S] -> [B, 1, H, D].

    Why a path of its own: in the cache each (row, KV head) block of keys is one contiguous [S, D] matrix,
    which both products read where it lies; in the layout of `xla_attention` ([B, S, K, D]) XLA transposed
    every layer's whole cache at every decode step. Same arithmetic as `xla_attention`: float32 scores,
    masked to the same constant, probabilities in the value dtype. On CPU, float32 caches go to a C++
    kernel with that arithmetic (`cpu_decode_attention`), which does in one pass per (row, KV head) pair
    what XLA:CPU ran as batched dots of tiny matrices.
    """
    b, _, h, d = q.shape
    kv_heads = k.shape[1]
    q_groups = q.reshape(b, kv_heads, h // kv_heads, d)  # head = kv_head * group + g, as `_to_groups`
    if q.dtype == k.dtype == v.dtype == jnp.float32 and cpu_decode_attention.enabled():
        return cpu_decode_attention.decode_attention(q_groups, k, v, mask).reshape(b, 1, h, d)
    return xla_cached_attention(q_groups, k, v, mask).astype(q.dtype).reshape(b, 1, h, d)


def xla_cached_attention(q_groups: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """`cached_attention` in XLA ops: q_groups [B, K, G, D], k/v [B, K, S, D], mask [B, S] -> float32 [B, K, G, D]."""
    d = q_groups.shape[-1]
    scores = jnp.einsum("bkgd,bksd->bkgs", q_groups, k, preferred_element_type=jnp.float32) * (d**-0.5)
    scores = jnp.where(mask[:, None, None, :], scores, _MASKED)
    row_max, inverse_sum = _softmax_stats(scores)
    probs = (jnp.exp(scores - row_max) * inverse_sum).astype(v.dtype)
    return jnp.einsum("bkgs,bksd->bkgd", probs, v, preferred_element_type=jnp.float32)


def causal_blocks_for(seq_len: int) -> int:
    """Query blocks for self-attention over `seq_len` tokens: blocks of at least 128, at most 8 blocks."""
    return max(1, min(8, seq_len // 128))


def cudnn_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, sliding_window: int | None
) -> jax.Array:
    """Fused cuDNN flash attention for full sequences (no cache): causal by index, segments as a mask.

    Valid when positions restart with each segment and grow by one inside it, which the data
    pipeline guarantees; `tests/test_attention.py` checks it against the reference on packed rows.
    """
    same_segment = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    window = None if sliding_window is None else (sliding_window - 1, 0)
    return jax.nn.dot_product_attention(
        q, k, v, mask=same_segment, is_causal=True, local_window_size=window, implementation="cudnn"
    )


# Splash attention (TPU). A Pallas/Mosaic kernel is not partitioned by XLA, so it runs inside
# `jax.shard_map` over the mesh's batch and head axes; each device sees its own rows and heads.
SPLASH_BLOCK = 512  # query/key tile: the largest power of two up to this that divides the sequence


def _splash_block(seq_len: int) -> int:
    block = SPLASH_BLOCK
    while block > 128 and seq_len % block:
        block //= 2
    if seq_len % block:
        raise ValueError(
            f"splash attention needs a sequence length that is a multiple of 128, got {seq_len}; "
            "set data.seq_len to one or use model.attention_impl='xla'"
        )
    return block


@functools.lru_cache(maxsize=32)
def _splash_kernel(heads: int, seq_len: int, sliding_window: int | None, interpret: bool):
    """One example's kernel, [H, T, D] queries against [K, T, D] keys (K divides H); the block-sparsity
    tables of its mask are built once per shape (thousands of tiles at 8192)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    shape = (seq_len, seq_len)
    if sliding_window is None:
        mask = splash.CausalMask(shape)
    else:
        mask = splash.LocalMask(shape, window_size=(sliding_window - 1, 0), offset=0)
    b = _splash_block(seq_len)
    blocks = splash.BlockSizes(
        block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b, block_kv_dkv_compute=b,
        block_q_dq=b, block_kv_dq=b,
    )  # fmt: skip
    with jax.ensure_compile_time_eval():  # concrete tables, not tracers of the first trace that built them
        return splash.make_splash_mha(
            splash.MultiHeadMask([mask] * heads), block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret
        )


def _splash_local(q, k, v, segment_ids, sliding_window: int | None, interpret: bool):
    """Splash on one device's shard: q [B,T,H,D], k/v [B,T,K,D], segment ids [B,T]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    kernel = _splash_kernel(q.shape[2], q.shape[1], sliding_window, interpret)
    scale = q.shape[-1] ** -0.5
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
    q = heads_first((q.astype(jnp.float32) * scale).astype(q.dtype))
    out = jax.vmap(kernel)(q, heads_first(k), heads_first(v), SegmentIds(segment_ids, segment_ids))
    # Padding (segment 0) attends to padding in the kernel; the XLA path gives it 0, and so does this one.
    return heads_first(out) * (segment_ids != 0)[:, :, None, None].astype(out.dtype)


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array,
    sliding_window: int | None,
    mesh: jax.sharding.Mesh | None = None,
    interpret: bool | None = None,
) -> jax.Array:
    """TPU flash attention (jax's splash kernel) for full sequences (no cache): causal by index, segments
    by id, an optional sliding window, GQA without repeating keys.

    Valid, as `cudnn_attention`, when positions restart with each segment and grow by one inside it.
    With a `mesh` (by default the one the train step traces under) the kernel runs per shard: rows over
    `data`×`fsdp`, heads over `tensor` where both query and key heads divide. `interpret` (default: the
    mesh's devices are not TPUs) runs the kernel's Python semantics, so its numerics are tested on CPU.
    """
    from jax.sharding import PartitionSpec

    from janus_jax.sharding import BATCH_AXES, activation_mesh

    mesh = mesh if mesh is not None else activation_mesh()
    if interpret is None:
        platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
        interpret = platform != "tpu"
    local = functools.partial(_splash_local, sliding_window=sliding_window, interpret=interpret)
    if mesh is None or mesh.size == 1:
        return local(q, k, v, segment_ids)
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    rows = BATCH_AXES if q.shape[0] % batch_devices == 0 else None
    tensor = mesh.shape["tensor"]
    heads = "tensor" if q.shape[2] % tensor == 0 and k.shape[2] % tensor == 0 else None
    spec = PartitionSpec(rows, None, heads, None)
    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(spec, spec, spec, PartitionSpec(rows, None)), out_specs=spec, check_vma=False
    )
    return sharded(q, k, v, segment_ids)


def self_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    sliding_window: int | None,
    impl: str,
) -> jax.Array:
    """Attention of packed rows over themselves (training, scoring, a prefill without a cache), by the
    kernel `impl` names ("auto": cuDNN on GPU, splash on TPU, XLA elsewhere)."""
    impl = resolve_impl(impl)
    if impl == "cudnn":
        return cudnn_attention(q, k, v, segment_ids, sliding_window)
    if impl == "splash":
        return splash_attention(q, k, v, segment_ids, sliding_window)
    mask = attention_mask(positions, positions, segment_ids, segment_ids, sliding_window)
    return xla_attention(q, k, v, mask, causal_blocks_for(q.shape[1]), sliding_window)


def resolve_impl(impl: str, platform: str | None = None) -> str:
    """The kernel "auto" stands for on `platform` (default: JAX's default backend)."""
    if impl != "auto":
        return impl
    return {"gpu": "cudnn", "tpu": "splash"}.get(platform or jax.default_backend(), "xla")
