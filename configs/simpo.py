"""SimPO (Meng et al. 2024): preference optimization without a reference model, on the DPO pairs.

The reward is the length-normalised log-prob β·mean log π(y|x), and the loss asks for a margin γ
between chosen and rejected. Defaults follow the SimPO paper's Mistral-7B setting (β 2.0, γ/β 0.5).
Presets: `tiny` (CPU, from the tiny SFT run in `runs/demo/sft`) and `janus_simpo_7b` (from Janus* 7B,
the DPO recipe's data and schedule with SimPO's loss: not a run of the Janus paper).
"""

import ml_collections

from configs.common import base_config, paper_7b


def get_config(preset: str = "tiny"):
    c = base_config("simpo")
    c.simpo = ml_collections.ConfigDict()
    c.simpo.beta = 2.0
    c.simpo.gamma = 1.0  # the target reward margin (TRL's simpo_gamma)
    c.simpo.label_smoothing = 0.0
    c.data.packing = False
    c.data.format = "dpo"
    if preset == "tiny":
        c.model.init_from = "runs/demo/sft"
        c.data.source = "data/samples/dpo.jsonl"
        c.data.seq_len = 128
        c.data.eval_fraction = 0.1
        c.optimizer.lr = 2e-3  # mean log-probs: per token, half the gradient of the tiny DPO's summed ones
        c.optimizer.warmup_steps = 5
        c.train.global_batch_size = 8
        c.train.num_epochs = 2
        c.train.log_every = 5
        c.train.checkpoint_every = 100
        return c
    if preset == "janus_simpo_7b":
        paper_7b(c)
        c.model.init_from = "runs/janus_7b_65k"
        c.data.source = "kaist-ai/Multifaceted-Collection-DPO"
        c.data.seq_len = 2048
        c.optimizer.lr = 5e-7
        c.train.global_batch_size = 16
        c.train.grad_accum_steps = 2
        c.train.num_epochs = 2
        return c
    raise ValueError(f"unknown preset {preset!r} for configs/simpo.py: tiny, janus_simpo_7b")
