"""ORPO from the base model (Janus+ORPO 7B: lr 5e-6, λ 0.1, seq 4096, 2 epochs, 16 pairs, ChatML).

The NLL term covers prompt + response by default, as TRL and the released Janus+ORPO do
(`orpo.nll_on_prompt=False` for the response only). Presets: `janus_orpo_7b`, `tiny`.
"""

import ml_collections

from configs.common import base_config, paper_7b


def get_config(preset: str = "tiny"):
    c = base_config("orpo")
    c.orpo = ml_collections.ConfigDict()
    c.orpo.lam = 0.1
    c.orpo.nll_on_prompt = True
    c.data.packing = False
    c.data.format = "dpo"
    if preset == "tiny":
        c.data.source = "data/samples/dpo.jsonl"
        c.data.seq_len = 128
        c.data.eval_fraction = 0.1
        c.orpo.lam = 0.5
        c.optimizer.lr = 1e-2  # from random init: the odds-ratio term starts to fall after ~20 steps
        c.optimizer.warmup_steps = 5
        c.train.global_batch_size = 8
        c.train.num_epochs = 4
        c.train.log_every = 5
        c.train.checkpoint_every = 100
        return c
    if preset == "janus_orpo_7b":
        paper_7b(c)
        c.data.source = "kaist-ai/Multifaceted-Collection-ORPO"
        # ChatML, as the released kaist-ai/janus-orpo-7b was trained (the repository's janus-7b-orpo.yml and
        # the model card: `chat_template: chatml`, `type: orpo.chat_template`). Unlike axolotl's ORPO path,
        # janus-jax frames each sequence with BOS ... EOS and leaves out an empty system turn.
        c.data.template = "chatml"
        c.data.seq_len = 4096
        c.optimizer.lr = 5e-6
        c.train.global_batch_size = 16
        c.train.grad_accum_steps = 2
        c.train.num_epochs = 2
        return c
    raise ValueError(f"unknown preset {preset!r} for configs/orpo.py: tiny, janus_orpo_7b")
