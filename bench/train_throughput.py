"""Train-step throughput: janus-jax's jitted step vs `transformers` + PyTorch, and vs a matmul ceiling.

Everything is measured in the same run, interleaved round by round so that load from other
processes hits every side alike; each figure is the median over rounds after a warm-up (compile).
On CPU each contender runs in a worker process of its own and only one works at a time, so that
PyTorch's OpenMP threads (which spin after each parallel region) and XLA's thread pool never
compete for the same cores within a measurement.

- `janus_tokens_per_s`: the trainer's own step (make_train_step, SFT objective, AdamW, clipping).
- `matmul_ceiling_flops`: a large square `jnp.dot` in the run's dtype: the practical peak here.
- `mfu_vs_ceiling`: model FLOPs (6·N per token plus attention, janus_jax.train.metrics) / ceiling.
- `torch_tokens_per_s`: HF MistralForCausalLM (eager PyTorch, SDPA attention) + torch AdamW on the
  identical model shape, batch and tokens.
- `dpo_*_vs_sft`: a DPO step over the same tokens (B/2 pairs of two rows), frozen reference model
  (policy + reference forward) and precomputed reference log-probs (policy only), per SFT step.

    .venv/bin/python bench/train_throughput.py                      # CPU, ~34M params, seq 512
    .venv/bin/python bench/train_throughput.py --model-size=1b --seq-len=4096 --dtype=bfloat16 --skip-torch  # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from configs import dpo as dpo_configs
from configs import sft as sft_configs
from janus_jax.model import MistralConfig
from janus_jax.model.attention import resolve_impl
from janus_jax.objectives import get_objective
from janus_jax.sharding import make_mesh
from janus_jax.train.metrics import peak_flops_per_device, train_flops_per_token
from janus_jax.train.run import batch_layout, build_run, model_config

# Mistral-shaped models. `cpu`: the decode benchmark's shape, 34M parameters, of which 24.6M sit in
# the (untied) 32000-token embedding and LM head, as in Mistral-7B. `1b`: TinyLlama-1.1B's shape
# with Mistral's vocabulary, for one GPU.
MODEL_SIZES = {
    "cpu": dict(
        vocab_size=32000,
        hidden_size=384,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=64,
    ),
    "1b": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=64,
    ),
}


def run_config(objective: str, args: argparse.Namespace, reference: str = "model") -> ConfigDict:
    """A janus-train config for the benchmark model (random init, no data files needed)."""
    cfg = dpo_configs.get_config("tiny") if objective == "dpo" else sft_configs.get_config("tiny")
    rows = args.batch_size // 2 if objective == "dpo" else args.batch_size
    with cfg.unlocked():
        cfg.model.init_from = ""
        cfg.model.update(MODEL_SIZES[args.model_size])
        cfg.model.max_position_embeddings = max(args.seq_len, 2048)
        cfg.model.dtype = args.dtype
        cfg.model.remat = args.remat
        cfg.model.attention_impl = args.attention_impl
        cfg.data.seq_len = args.seq_len
        cfg.train.global_batch_size = rows
        cfg.train.grad_accum_steps = 1
        if objective == "dpo":
            cfg.dpo.reference = reference
            cfg.dpo.reference_dtype = args.dtype
    return cfg


def synthetic_batch(cfg: ConfigDict, vocab: int, scored_fraction: float, seed: int = 0) -> dict[str, np.ndarray]:
    """One global batch with every key the data pipeline produces: one document per row, full-length
    rows, the loss on the last `scored_fraction` of each row (the response; the rest is the prompt)."""
    rng = np.random.default_rng(seed)
    seq = int(cfg.data.seq_len)
    prompt = seq - round(seq * scored_fraction)
    out: dict[str, np.ndarray] = {}
    for key, (shape, dtype) in batch_layout(cfg, get_objective(cfg.objective)).items():
        name = key.removeprefix("chosen_").removeprefix("rejected_")
        if name in ("input_ids", "targets"):
            value = rng.integers(3, vocab, size=shape)
        elif name == "loss_weights":
            value = np.broadcast_to(np.arange(seq) >= prompt, shape)
        elif name == "positions":
            value = np.broadcast_to(np.arange(seq), shape)
        elif name in ("segment_ids", "pair_weights"):
            value = np.ones(shape)
        elif name in ("lengths",):
            value = np.full(shape, seq)
        elif name == "prompt_lengths":
            value = np.full(shape, prompt)
        elif name == "pair_ids":
            value = np.arange(shape[0])
        elif name in ("ref_chosen_logps", "ref_rejected_logps"):
            value = rng.normal(-seq * 5.0, 10.0, size=shape)
        else:
            raise KeyError(f"benchmark does not know how to fill batch key {key!r}")
        out[key] = np.asarray(value, dtype=np.dtype(dtype))
    return out


class JanusStep:
    """The trainer's jitted step on real arrays; each call runs one optimizer step to completion."""

    def __init__(self, cfg: ConfigDict, mesh, scored_fraction: float):
        run = build_run(cfg, mesh=mesh, with_data=False)
        self.mcfg = run.model_config
        params = run.initial_params()
        self.ref = run.reference_params(workdir=None, initial=params)
        self.state = run.fresh_state(params)
        batch = synthetic_batch(cfg, self.mcfg.vocab_size, scored_fraction)
        self.batch = {k: jax.device_put(v, run.batch_shapes[k].sharding) for k, v in batch.items()}
        self.fn = run.step_fn
        self.num_params = run.num_params
        self.tokens = int(cfg.train.global_batch_size) * int(cfg.data.seq_len) * (2 if cfg.objective == "dpo" else 1)

    def __call__(self) -> None:
        self.state, metrics = self.fn(self.state, self.batch, self.ref)
        jax.block_until_ready((self.state, metrics))


class TorchStep:
    """HF MistralForCausalLM + torch AdamW + grad clipping on the same shape and tokens."""

    def __init__(self, mcfg: MistralConfig, batch: dict[str, np.ndarray]):
        import torch
        from transformers import MistralConfig as HFMistralConfig
        from transformers import MistralForCausalLM

        torch.manual_seed(0)
        hf_config = HFMistralConfig(**mcfg.to_hf_dict(), attn_implementation="sdpa")
        self.torch = torch
        self.model = MistralForCausalLM(hf_config).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5, weight_decay=0.0)
        self.input_ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
        self.targets = torch.from_numpy(batch["targets"].astype(np.int64))
        self.weights = torch.from_numpy(batch["loss_weights"].copy())
        self.vocab = mcfg.vocab_size

    def __call__(self) -> None:
        torch = self.torch
        logits = self.model(input_ids=self.input_ids).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.view(-1, self.vocab), self.targets.view(-1), reduction="none")
        loss = (nll * self.weights.view(-1)).sum() / self.weights.sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()


def ceiling_repeats() -> int:
    """Back-to-back matmuls per ceiling timing: on a GPU, enough that dispatch does not count."""
    return 20 if jax.default_backend() == "gpu" else 2


def matmul_ceiling(n: int, dtype: str) -> Callable[[], None]:
    """`ceiling_repeats()` back-to-back square n×n matmuls in `dtype`."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(key_b, (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    repeats = ceiling_repeats()

    def run() -> None:
        jax.block_until_ready([dot(a, b) for _ in range(repeats)])

    return run


def matmul_ceiling_flops(n: int) -> float:
    """FLOPs of one `matmul_ceiling` call: 2n³ per matmul."""
    return 2.0 * n**3 * ceiling_repeats()


def time_rounds(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, `rounds` times, after one warm-up call each. The functions
    run interleaved round by round, so that load from other processes hits them alike."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of a ratio of times measured in the same round (robust to load drift)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


_REPLY = "@@bench "  # prefix of a worker's protocol lines (anything else on stdout is passed through)


def build_contender(name: str, args: argparse.Namespace, mesh=None) -> Callable[[], None]:
    """One timed function: `ceiling`, `torch`, or a janus step (`sft`, `dpo_model`, `dpo_precomputed`)."""
    if name == "ceiling":
        return matmul_ceiling(args.matmul_size, args.dtype)
    sft_cfg = run_config("sft", args)
    if name == "torch":
        mcfg = model_config(sft_cfg)
        return TorchStep(mcfg, synthetic_batch(sft_cfg, mcfg.vocab_size, args.scored_fraction))
    mesh = mesh or make_mesh((1, 1, 1), jax.devices()[:1])
    if name == "sft":
        return JanusStep(sft_cfg, mesh, args.scored_fraction)
    return JanusStep(run_config("dpo", args, name.removeprefix("dpo_")), mesh, args.scored_fraction)


def worker_main(args: argparse.Namespace) -> None:
    """Worker process: build one contender, warm it up, then run it once per `run` line on stdin."""
    fn = build_contender(args.worker, args)
    fn()
    print(_REPLY + json.dumps({"ready": args.worker}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        fn()
        print(_REPLY + json.dumps({"s": time.perf_counter() - start}), flush=True)


class Worker:
    """The parent's handle on one worker process (this script with `--worker NAME`)."""

    def __init__(self, name: str, argv: list[str]):
        self.name = name
        command = [sys.executable, __file__, *argv, f"--worker={name}"]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                return json.loads(line[len(_REPLY) :])
            sys.stderr.write(line)
        raise RuntimeError(f"benchmark worker {self.name!r} exited with status {self.proc.wait()}")

    def __call__(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self.reply()["s"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def time_workers(names: list[str], argv: list[str], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, each in its own process, interleaved round by round.

    Workers start (and compile) together; timing begins once all are warm. While one runs, the
    others wait on a pipe, so each measurement has the cores to itself.
    """
    workers = [Worker(name, argv) for name in names]
    try:
        for worker in workers:
            worker.reply()
        samples: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for worker in workers:
                samples[worker.name].append(worker())
        return samples
    finally:
        for worker in workers:
            worker.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="cpu")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step (default 8; 4 for 1b)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="activations/matmuls")
    parser.add_argument("--remat", default="none", choices=["none", "minimal", "save_qkv", "full"])
    parser.add_argument("--attention-impl", default="auto", choices=["auto", "xla", "cudnn"])
    parser.add_argument(
        "--matmul-size", type=int, default=None, help="ceiling matmul side (default 2048 CPU, 8192 GPU)"
    )
    parser.add_argument(
        "--scored-fraction", type=float, default=0.5, help="share of each row in the loss (the response)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-torch", action="store_true", help="no PyTorch comparison")
    parser.add_argument("--skip-dpo", action="store_true", help="no DPO step timings")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one contender
    args = parser.parse_args(argv)
    gpu = jax.default_backend() == "gpu"
    if args.model_size == "1b" and not gpu:
        parser.exit(
            2,
            f"--model-size=1b is the single-GPU benchmark, but JAX sees no GPU here (backend "
            f"{jax.default_backend()!r}, devices {[d.device_kind for d in jax.devices()]}). Install jax[cuda12] "
            "on a GPU machine, or run the CPU benchmark without --model-size.\n",
        )
    if gpu and not args.skip_torch:
        parser.exit(2, "the PyTorch comparison is the CPU benchmark's; on a GPU pass --skip-torch\n")
    if not 0 < args.scored_fraction <= 1:
        parser.exit(2, f"--scored-fraction={args.scored_fraction}: expected a share in (0, 1]\n")
    if args.attention_impl == "cudnn" and not gpu:
        parser.exit(2, "--attention-impl=cudnn needs a GPU; on this machine use auto or xla\n")
    args.batch_size = args.batch_size or (4 if args.model_size == "1b" else 8)
    args.matmul_size = args.matmul_size or (8192 if gpu else 2048)
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return {}
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])  # one device: the benchmark measures a single chip
    gpu = jax.default_backend() == "gpu"
    names = ["sft"] + ([] if args.skip_dpo else ["dpo_model", "dpo_precomputed"])
    sft_cfg = run_config("sft", args)
    mcfg = model_config(sft_cfg)
    num_params = build_run(sft_cfg, mesh=mesh, with_data=False).num_params
    tokens = args.batch_size * args.seq_len
    if gpu:
        # One step at a time, each freed before the next is built: a 1B model's state and activations
        # fill most of a GPU's memory, and a GPU's speed does not drift with other processes' load.
        ceiling = build_contender("ceiling", args)
        samples: dict[str, list[float]] = {"ceiling": []}
        for name in names:
            step = build_contender(name, args, mesh)
            timed = time_rounds({"ceiling": ceiling, name: step}, args.rounds)
            samples["ceiling"] += timed["ceiling"]
            samples[name] = timed[name]
            del step
    else:
        samples = time_workers(["ceiling", *names] + ([] if args.skip_torch else ["torch"]), argv, args.rounds)
    torch_threads = None
    if not args.skip_torch:
        import torch

        torch_threads = torch.get_num_threads()
    times = {name: statistics.median(v) for name, v in samples.items()}

    flops_per_token = train_flops_per_token(mcfg, args.seq_len, args.scored_fraction)
    ceiling = matmul_ceiling_flops(args.matmul_size) / times["ceiling"]
    janus_tps = tokens / times["sft"]
    result = {
        "model_size": args.model_size,
        "model_params": num_params,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "tokens_per_step": tokens,
        "scored_fraction": args.scored_fraction,
        "dtype": args.dtype,
        "remat": args.remat,
        "attention_impl": resolve_impl(mcfg.attention_impl),
        "train_flops_per_token": flops_per_token,
        "janus_step_s": times["sft"],
        "janus_tokens_per_s": janus_tps,
        "matmul_ceiling_size": args.matmul_size,
        "matmul_ceiling_flops": ceiling,
        "mfu_vs_ceiling": janus_tps * flops_per_token / ceiling,
    }
    peak = peak_flops_per_device()
    if peak:
        result.update(device_peak_flops=peak, mfu_vs_peak=janus_tps * flops_per_token / peak)
    if not args.skip_dpo:
        result.update(
            dpo_model_step_s=times["dpo_model"],
            dpo_precomputed_step_s=times["dpo_precomputed"],
            dpo_model_vs_sft=median_ratio(samples["dpo_model"], samples["sft"]),
            dpo_precomputed_vs_sft=median_ratio(samples["dpo_precomputed"], samples["sft"]),
        )
    if not args.skip_torch:
        torch_tps = tokens / times["torch"]
        result.update(
            torch_step_s=times["torch"],
            torch_tokens_per_s=torch_tps,
            torch_mfu_vs_ceiling=torch_tps * flops_per_token / ceiling,
            janus_vs_torch=median_ratio(samples["torch"], samples["sft"]),
            torch_attention="sdpa",
            torch_threads=torch_threads,
        )
    result.update(
        rounds=args.rounds,
        jax_backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        cpu=platform.processor() or platform.machine(),
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
