"""Bradley-Terry reward model (Janus-RM 7B: from Janus 7B after 1 epoch, lr 9e-6, batch 128, 1 epoch,
seq 2048, Adam β (0.9, 0.95), 3% warmup, clip 1.0). Presets: `janus_rm_7b` (stage 1, the Multifaceted
pairs), `janus_rm_7b_helpful` (stage 2: the stage-1 RM, scalar head included, on 66k helpfulness pairs), and
their CPU-sized twins `tiny` (from the tiny SFT run, on the bundled pairs) and `tiny_helpful` (from a `tiny`
RM, on the bundled helpfulness pairs).

Best-of-N with a trained reward model: `janus-best-of-n` (janus_jax/best_of_n.py).
"""

from configs.common import base_config, paper_7b


def get_config(preset: str = "tiny"):
    c = base_config("rm")
    c.data.packing = False
    c.data.format = "rm"
    c.optimizer.b2 = 0.95
    c.optimizer.warmup_steps = -1
    c.optimizer.warmup_ratio = 0.03
    if preset == "tiny":
        c.model.init_from = "runs/demo/sft"
        c.data.source = "data/samples/rm.jsonl"
        c.data.seq_len = 128
        c.data.eval_fraction = 0.1
        c.optimizer.lr = 1e-3
        c.train.global_batch_size = 8
        c.train.num_epochs = 4
        c.train.log_every = 5
        c.train.checkpoint_every = 100
        return c
    if preset == "tiny_helpful":
        # Stage 2 at toy scale, as janus_rm_7b_helpful: the stage-1 RM with stage 1's settings.
        c = get_config("tiny")
        c.model.init_from = "runs/rm-tiny"  # a workdir of configs/rm.py:tiny
        c.data.source = "data/samples/rm_helpful.jsonl"
        return c
    if preset == "janus_rm_7b":
        paper_7b(c)
        c.model.init_from = "runs/janus_7b_epoch1"  # a workdir of configs/sft.py:janus_7b_epoch1
        c.data.source = "kaist-ai/Multifaceted-Collection-RM"
        c.data.seq_len = 2048
        c.optimizer.lr = 9e-6
        c.optimizer.warmup_steps = -1
        c.optimizer.warmup_ratio = 0.03
        c.train.global_batch_size = 128
        c.train.grad_accum_steps = 16
        c.train.num_epochs = 1
        return c
    if preset == "janus_rm_7b_helpful":
        # Stage 2, as the Janus repository's train_rm_helpful.sh: the stage-1 RM, trained with the same
        # settings on 66k pairs of HH-RLHF / oasst1 / WebGPT (0.72 / 0.14 / 0.14) that
        # `python -m data_gen.helpfulness --out data/rm_helpful` writes.
        c = get_config("janus_rm_7b")
        c.model.init_from = "runs/janus_rm_7b"  # a workdir of configs/rm.py:janus_rm_7b
        c.data.source = "data/rm_helpful/rm_helpful.jsonl"
        return c
    raise ValueError(f"unknown preset {preset!r} for configs/rm.py: tiny, tiny_helpful, janus_rm_7b, "
                     "janus_rm_7b_helpful")
