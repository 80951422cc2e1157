"""`make demo`: the whole Janus recipe in miniature, on the CPU, in a few minutes.

1. SFT of a tiny Mistral on the bundled Multifaceted-Collection-style sample (configs/sft.py:tiny).
2. Replies to one prompt under different system messages, sampled from the result.
3. DPO from that checkpoint on the bundled pairs (configs/dpo.py:tiny): the reward margin rises.
Everything lands in runs/demo/; rerunning resumes or reuses finished stages.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

DEMO_DIR = Path("runs/demo")


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def _training_instruction(cfg) -> tuple[str, list[str]]:
    """A prompt the tiny model trained on, with its system messages (the held-out ones are unseen)."""
    from janus_jax.data.pipeline import split_off_eval
    from janus_jax.data.records import validate
    from janus_jax.data.report import DataReport
    from janus_jax.data.sources import load_rows

    report = DataReport()
    rows = load_rows(cfg.data.source, cfg.data.split, report, "train")
    train_records, _ = split_off_eval(validate(rows, "sft", report, "train"), cfg.data.eval_fraction, cfg.data.seed)
    first = train_records[0].prompt
    return first, [r.system for r in train_records if r.prompt == first]


def _sample_replies(workdir: Path, prompt: str, systems: list[str]) -> None:
    from janus_jax.load import load_model
    from janus_jax.prompts import render_prompt_ids
    from janus_jax.sample import Sampler, SamplingParams
    from janus_jax.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = load_model(workdir)
    sampler = Sampler(model, tok, pad_id=tok.pad_id)
    prompts = [render_prompt_ids(tok, system, prompt) for system in systems]
    outs = sampler.generate(prompts, SamplingParams(max_new_tokens=64, temperature=0.0))
    for system, out in zip(systems, outs):
        print(f"[system] {system}\n[user]   {prompt}\n[model]  {out.text.strip()!r}  ({out.finish_reason})\n")


def _margins(workdir: Path) -> list[tuple[int, float, float]]:
    from janus_jax.train.metrics import read_metrics

    return [
        (r["step"], r["rewards/margins"], r["rewards/accuracies"])
        for r in read_metrics(workdir)
        if "rewards/margins" in r
    ]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("janus_jax").setLevel(logging.INFO)
    from configs import dpo, sft
    from janus_jax.train.trainer import train

    sft_dir, dpo_dir = DEMO_DIR / "sft", DEMO_DIR / "dpo"
    _banner("1/3  SFT: tiny Mistral on data/samples/sft.jsonl (configs/sft.py:tiny)")
    sft_cfg = sft.get_config("tiny")
    final = train(sft_cfg, sft_dir)
    nan = float("nan")
    print(f"final train loss {final.get('loss', nan):.3f}, eval loss {final.get('eval/loss', nan):.3f}")

    _banner("2/3  Same prompt, different system messages (greedy)")
    _sample_replies(sft_dir, *_training_instruction(sft_cfg))

    _banner("3/3  DPO from the SFT checkpoint on data/samples/dpo.jsonl (configs/dpo.py:tiny)")
    cfg = dpo.get_config("tiny")
    cfg.model.init_from = str(sft_dir)
    train(cfg, dpo_dir)
    rows = _margins(dpo_dir)
    print("step  rewards/margins  rewards/accuracies")
    for step, margin, acc in rows:
        print(f"{step:4d}  {margin:15.3f}  {acc:18.3f}")

    _banner("Where things are")
    for label, path in (
        ("SFT checkpoints", sft_dir / "checkpoints"),
        ("SFT metrics", sft_dir / "metrics.jsonl"),
        ("SFT loss curve", sft_dir / "loss.png"),
        ("DPO checkpoints", dpo_dir / "checkpoints"),
        ("DPO metrics", dpo_dir / "metrics.jsonl"),
        ("DPO loss curve", dpo_dir / "loss.png"),
    ):
        print(f"{label:16s} {path.absolute()}")
    print("\nExport to Hugging Face format: janus-export --checkpoint=runs/demo/sft --out=runs/demo/hf")


if __name__ == "__main__":
    main()
