"""Decode throughput with the CPU decode-attention kernel vs XLA's own attention ops, in one run.

Same model and settings as decode_throughput.py (34M Mistral shape, fp32, greedy, prompt 32, 128 new tokens,
EOS off). Each side runs in its own process, since the choice is made when the decode program is traced
(`JANUS_CPU_DECODE_KERNEL`); the processes alternate, `--rounds` times each, and each reports its best of
--repeats after a warm-up. Prints one JSON object with the machine's load average before and after.

    .venv/bin/python bench/cpu_decode_attention.py
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time

SIDES = {"kernel": "1", "xla": "0"}


def child(batch: int, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    import numpy as np
    from decode_throughput import BENCH_MODEL
    from flax import nnx

    from janus_jax.model import Mistral, cpu_decode_attention
    from janus_jax.sample import GREEDY, Sampler

    sampler = Sampler(Mistral(BENCH_MODEL, rngs=nnx.Rngs(0)), eos_id=-1)
    params = dataclasses.replace(GREEDY, max_new_tokens=new_tokens)
    prompts = np.random.default_rng(0).integers(3, BENCH_MODEL.vocab_size, size=(batch, prompt_len)).tolist()
    out = sampler.generate(prompts, params)  # warm-up: compilation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = sampler.generate(prompts, params)
        best = min(best, time.perf_counter() - start)
    tokens = [c.token_ids for c in out]
    return {
        "kernel_used": cpu_decode_attention.enabled(),
        "tokens_per_s": batch * new_tokens / best,
        "rows": [hashlib.sha1(json.dumps(t).encode()).hexdigest() for t in tokens],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # batch size, in a child process
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.prompt_len, args.new_tokens, args.repeats)))
        return

    result = {"loadavg_before": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}
    for batch in args.batches:
        best = {side: 0.0 for side in SIDES}
        rows = {}
        for _ in range(args.rounds):
            for side, switch in SIDES.items():
                env = {**os.environ, "JANUS_CPU_DECODE_KERNEL": switch, "JAX_PLATFORMS": "cpu"}
                command = [sys.executable, __file__, "--child", str(batch), "--prompt-len", str(args.prompt_len),
                           "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]  # fmt: skip
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                run = json.loads(done.stdout.strip().splitlines()[-1])
                if run["kernel_used"] != (side == "kernel"):
                    used = run["kernel_used"]
                    raise SystemExit(f"the {side} side ran with kernel_used={used}: {done.stderr[-2000:]}")
                best[side] = max(best[side], run["tokens_per_s"])
                rows[side] = run["rows"]
        result[f"kernel_tokens_per_s_b{batch}"] = round(best["kernel"], 1)
        result[f"xla_tokens_per_s_b{batch}"] = round(best["xla"], 1)
        result[f"speedup_b{batch}"] = round(best["kernel"] / best["xla"], 2)
        same = [a == b for a, b in zip(rows["kernel"], rows["xla"], strict=True)]
        result[f"identical_greedy_rows_b{batch}"] = sum(same) / batch
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
