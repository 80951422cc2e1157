"""`make repro`: the paper's system-message ablation at toy scale, on the synthetic world (data_gen/world).

Presets (same tiny model, seed, optimizer steps and packed tokens; they differ only in the training rows):
  generic  one generic system message ("You are a helpful assistant.") on 1 row per instruction
  sm1      1 system message per instruction (the paper's Janus*)
  sm2      2 system messages per instruction
  sm3      3 system messages per instruction (the paper's Janus)
Every preset holds out the same instructions (the world's sft_heldout.jsonl, with unseen system messages) for
eval loss. Build the world first: `python -m data_gen.world generate --out runs/repro/world`.

    janus-train --config=configs/repro.py:sm3 --workdir=runs/repro/sm3/train
"""

from configs.common import base_config

WORLD_DIR = "runs/repro/world"
PRESETS = ("generic", "sm1", "sm2", "sm3")


def get_config(preset: str = "sm3"):
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for configs/repro.py: {', '.join(PRESETS)}")
    c = base_config("sft")
    c.data.source = f"{WORLD_DIR}/sft.jsonl"
    c.data.eval_source = f"{WORLD_DIR}/sft_heldout.jsonl"
    c.data.seq_len = 512
    c.data.packing = True
    c.data.system_messages_per_instruction = 1 if preset == "generic" else int(preset[2:])
    c.data.system_message_policy = "generic" if preset == "generic" else "as_is"
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 10
    c.train.global_batch_size = 8
    c.train.num_epochs = 100  # more than any preset needs: max_steps ends every run at the same step
    c.train.max_steps = 300
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.checkpoint_every = 100
    return c
