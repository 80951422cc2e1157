"""Top-k/top-p cut-offs over a 32k vocabulary: janus-jax's bisection vs a sort of the vocabulary, same run.

The sort is what HF's warpers do (and what janus_jax.sample did before): sort each row, cumulative
softmax, cut. The bisection (`janus_jax.sample.filter_top_k_top_p`) finds the same cut-off value in 32
passes over the logits. Rows are flat (scale 0.05: the nucleus holds most of the vocabulary, as for an
untrained model) or peaked (scale 3); top-k 0 (top-p only) or 500. Both sides must keep the same tokens.
Prints one JSON object: milliseconds per call (best of --repeats) and the speedup, per case.

    .venv/bin/python bench/top_p_filter.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from janus_jax.sample import filter_top_k_top_p

VOCAB = 32000
NEG_INF = -jnp.inf


def sorted_filter(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """The reference: a full sort per row, then HF's TopK-then-TopP cut (mass of strictly likelier tokens)."""
    vocab = logits.shape[-1]
    ranks = jnp.arange(vocab)[None, :]
    desc = -jnp.sort(-logits, axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)[:, None]
    desc = jnp.where(ranks < k, desc, NEG_INF)
    probs = jax.nn.softmax(desc, axis=-1)
    keep = (jnp.cumsum(probs, axis=-1) - probs < top_p[:, None]) & (ranks < k)
    n_keep = jnp.maximum(jnp.sum(keep, axis=-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(desc, n_keep - 1, axis=-1)
    return jnp.where(logits >= threshold, logits, NEG_INF)


def best_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ours, reference = jax.jit(filter_top_k_top_p), jax.jit(sorted_filter)
    result = {
        "vocab": VOCAB,
        "top_p": 0.9,
        "jax_backend": jax.default_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "cases": [],
    }
    for rows in (1, 32):
        for scale, shape in ((0.05, "flat"), (3.0, "peaked")):
            logits = jnp.asarray(rng.normal(size=(rows, VOCAB)).astype(np.float32) * scale)
            for top_k in (0, 500):
                call = (logits, jnp.full((rows,), top_k, jnp.int32), jnp.full((rows,), 0.9, jnp.float32))
                kept, kept_ref = np.isfinite(ours(*call)), np.isfinite(reference(*call))
                if not np.array_equal(kept, kept_ref):
                    raise SystemExit(f"rows={rows} {shape} top_k={top_k}: the two cut-offs keep different tokens")
                ours_ms, sort_ms = best_ms(ours, call, args.repeats), best_ms(reference, call, args.repeats)
                result["cases"].append({
                    "rows": rows, "logits": shape, "top_k": top_k, "kept_per_row": round(kept.sum() / rows, 1),
                    "bisection_ms": round(ours_ms, 2), "sort_ms": round(sort_ms, 2),
                    "speedup": round(sort_ms / ours_ms, 1),
                })  # fmt: skip
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
