"""Decode throughput: janus-jax's Sampler vs transformers `generate`, same weights, same run.

A ~34M-parameter Mistral-shaped model (vocab 32000, hidden 384, 6 layers, GQA 6/2) with random
weights, fp32, EOS disabled so that both sides generate exactly --new-tokens per row. Greedy by default;
`--decoding janus` samples with the paper's settings (temperature 1, top-p 0.9, repetition penalty 1.03)
on both sides: random weights give a flat distribution whose nucleus holds most of the vocabulary, the
dearest case for top-p.
Prints one JSON object (generated tokens per second, best of --repeats after a warm-up run), with the
machine's load average before and after: on a shared machine a loaded run shows as such (both sides
run interleaved, but other jobs do not slow them alike).

    .venv/bin/python bench/decode_throughput.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time

import jax
import numpy as np
import torch
from flax import nnx
from transformers import MistralForCausalLM

import janus_jax
from janus_jax.model import Mistral, MistralConfig, cpu_decode_attention
from janus_jax.sample import GREEDY, JANUS_SAMPLING, Sampler

BENCH_MODEL = MistralConfig(
    vocab_size=32000,
    hidden_size=384,
    intermediate_size=1024,
    num_hidden_layers=6,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=4096,
    dtype="float32",
)


def best_times(fns, repeats: int) -> list[float]:
    """Best wall time of each function; runs are interleaved so that load from other processes hits
    both sides alike. The first run of each is a warm-up (compilation on the JAX side)."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decoding", choices=("greedy", "janus"), default="greedy")
    parser.add_argument(
        "--serve-tokens", type=int, default=32, help="max_tokens of the janus-serve requests (0: skip janus-serve)"
    )
    args = parser.parse_args()

    model = Mistral(BENCH_MODEL, rngs=nnx.Rngs(0))
    with tempfile.TemporaryDirectory() as tmp:
        janus_jax.save_pretrained(model, tmp, dtype="float32")
        hf = MistralForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    sampler = Sampler(model, eos_id=-1)  # no EOS: every row generates exactly new_tokens
    greedy = args.decoding == "greedy"
    params = dataclasses.replace(GREEDY if greedy else JANUS_SAMPLING, max_new_tokens=args.new_tokens)
    hf_sampling = (
        {"do_sample": False}
        if greedy
        else {
            "do_sample": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "repetition_penalty": params.repetition_penalty,
        }
    )
    rng = np.random.default_rng(0)

    result = {
        "model_params": BENCH_MODEL.num_params,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "dtype": "float32",
        "decoding": args.decoding,
        "jax_backend": jax.default_backend(),
        "cpu_decode_kernel": cpu_decode_attention.enabled(),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    for batch in (1, 16):
        prompts = rng.integers(3, BENCH_MODEL.vocab_size, size=(batch, args.prompt_len))
        ours = {}

        def run_janus(prompts=prompts, ours=ours):
            ours["out"] = sampler.generate(prompts.tolist(), params)

        def run_hf(prompts=prompts, ours=ours):
            with torch.inference_mode():
                ours["hf"] = hf.generate(
                    torch.from_numpy(prompts),
                    attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                    **hf_sampling,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    pad_token_id=0,
                )

        generated = batch * args.new_tokens
        janus_s, hf_s = best_times([run_janus, run_hf], args.repeats)
        assert all(len(c.token_ids) == args.new_tokens for c in ours["out"])
        assert ours["hf"].shape == (batch, args.prompt_len + args.new_tokens)
        result[f"janus_tokens_per_s_b{batch}"] = round(generated / janus_s, 1)
        result[f"hf_tokens_per_s_b{batch}"] = round(generated / hf_s, 1)
        result[f"speedup_b{batch}"] = round(hf_s / janus_s, 2)
        if greedy:
            same = [c.token_ids == ours["hf"][i, args.prompt_len :].tolist() for i, c in enumerate(ours["out"])]
            result[f"identical_greedy_rows_b{batch}"] = float(np.mean(same))
    result["loadavg_after_decode"] = [round(x, 2) for x in os.getloadavg()]
    if args.serve_tokens > 0:
        result.update(serve_batching(model, args.serve_tokens))
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


def serve_batching(model: Mistral, max_tokens: int) -> dict:
    """janus-serve: 32 greedy chat requests one after another vs all at once (continuous batching)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from janus_jax.serve.build import build_server
    from janus_jax.serve.loading import LoadedModel
    from janus_jax.tokenizer import load_tokenizer

    server = build_server(LoadedModel(model, load_tokenizer(), "bench"), port=0, max_batch=32, log_requests=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)

    def ask(i: int) -> int:
        messages = [{"role": "user", "content": f"Tell me about the number {i}."}]
        reply = client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens, temperature=0.0)
        return reply.usage.completion_tokens

    try:
        with ThreadPoolExecutor(32) as pool:  # warm-up: compile the shapes both phases use
            list(pool.map(ask, range(32)))
        ask(0)
        start = time.perf_counter()
        sequential = sum(ask(i) for i in range(32))
        sequential_s = time.perf_counter() - start
        chunks = server.engine.stats.chunks
        start = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            concurrent = sum(pool.map(ask, range(32)))
        concurrent_s = time.perf_counter() - start
        return {
            "serve_max_tokens": max_tokens,
            "serve_tokens_per_s_sequential": round(sequential / sequential_s, 1),
            "serve_tokens_per_s_concurrent32": round(concurrent / concurrent_s, 1),
            "serve_decode_chunks_for_32_concurrent": server.engine.stats.chunks - chunks,
        }
    finally:
        server.shutdown()
        server.engine.close()
        server.server_close()


if __name__ == "__main__":
    main()
