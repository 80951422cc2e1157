"""Supervised fine-tuning on the Multifaceted Collection (DESIGN §7).

Presets: `janus_7b` (Janus 7B: all 196,998 rows), `janus_7b_65k` (Janus* 7B: one system message per
instruction), `janus_7b_epoch1` (the reward model's initialisation), and `tiny` (CPU, bundled sample).
"""

from configs.common import base_config, paper_7b


def get_config(preset: str = "tiny"):
    c = base_config("sft")
    if preset == "tiny":
        c.data.source = "data/samples/sft.jsonl"
        c.data.seq_len = 256
        c.data.packing = True
        c.data.eval_fraction = 0.1
        c.optimizer.lr = 5e-3
        c.optimizer.warmup_steps = 10
        c.train.global_batch_size = 8
        c.train.num_epochs = 30  # ~210 steps: long enough for the tiny model to follow the system messages
        c.train.log_every = 5
        c.train.eval_every = 50
        c.train.checkpoint_every = 50
        return c
    if preset in ("janus_7b", "janus_7b_65k", "janus_7b_epoch1"):
        paper_7b(c)
        c.data.source = "kaist-ai/Multifaceted-Collection"
        c.data.seq_len = 8192
        c.data.packing = True
        c.optimizer.lr = 5e-6
        c.train.global_batch_size = 32
        c.train.num_epochs = 4
        if preset == "janus_7b_65k":
            c.data.source = "kaist-ai/Multifaceted-Collection-small"
        if preset == "janus_7b_epoch1":
            c.train.num_epochs = 1
        return c
    raise ValueError(f"unknown preset {preset!r} for configs/sft.py: tiny, janus_7b, janus_7b_65k, janus_7b_epoch1")
