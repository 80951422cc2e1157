"""Shared sections of every run config. Presets in sft.py / dpo.py / orpo.py / rm.py override them."""

from __future__ import annotations

import ml_collections

from janus_jax.data.config import default_data_config


def base_config(objective: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.objective = objective

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # janus_jax.model.MistralConfig presets: tiny, mistral_7b_v0_2, mistral_7b_v0_1
    c.model.init_from = ""  # "" = random init; an HF directory or hub id; or a janus workdir/checkpoint
    c.model.dtype = "float32"  # activations and matmuls
    c.model.param_dtype = "float32"  # master weights and optimizer state
    c.model.scan_layers = True
    c.model.remat = "none"  # none | minimal | save_qkv | full
    c.model.attention_impl = "auto"  # auto (cuDNN on GPU, splash on TPU, XLA elsewhere) | xla | cudnn | splash

    c.data = default_data_config()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.lr = 5e-6
    c.optimizer.schedule = "cosine"  # cosine | constant (both after linear warmup)
    c.optimizer.warmup_steps = 10
    c.optimizer.warmup_ratio = 0.0  # used when warmup_steps is negative
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 1.0

    c.train = ml_collections.ConfigDict()
    c.train.global_batch_size = 32  # rows (SFT) or pairs (DPO/ORPO/RM) per optimizer step, all hosts
    c.train.grad_accum_steps = 1  # micro-batches per step (token-weighted, exact)
    c.train.num_epochs = 1
    c.train.max_steps = 0  # 0 = num_epochs over the data
    c.train.seed = 0
    c.train.log_every = 10
    c.train.eval_every = 0  # 0 = only at the end (when there is an eval split)
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    c.train.async_checkpoint = True
    c.train.peak_flops_per_device = 0.0  # for MFU on devices without a known peak (0 = look up)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); one -1 absorbs the remaining devices
    return c


def paper_7b(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """What every 7B Janus run shares: Mistral-7B-v0.2 in bf16 compute, fsdp over all devices."""
    c.model.preset = "mistral_7b_v0_2"
    c.model.init_from = "mistral-community/Mistral-7B-v0.2"  # the base model Janus starts from
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.optimizer.warmup_steps = 10
    c.optimizer.weight_decay = 0.0
    c.train.log_every = 1
    c.train.checkpoint_every = 200
    c.train.grad_accum_steps = 4  # micro-batches of 1/4 of the global batch (the paper: 4 GPUs x 2 x 4 steps)
    return c
