"""The `config.data` section of every training config, with each key explained."""

from __future__ import annotations

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults for `config.data`; training presets override what they need.

    Keys:
      source: hub dataset name (e.g. "kaist-ai/Multifaceted-Collection"), or a local .jsonl/.json/.parquet
        file, a directory of .jsonl/.parquet shards, or a prepared TFDS directory (janus_jax/data/tfds_builder.py).
      split: split to read from hub and TFDS sources (local files are one split).
      format: row schema: "sft" (system, prompt, output), "dpo" (system, prompt, chosen/rejected message
        lists; also the ORPO data), "rm" (input, chosen, rejected); "" detects it from the first row.
      template: the prompt format, "mistral_inst" (`[INST] {system}\n{prompt} [/INST]`, Janus SFT) or "chatml"
        (the released Janus+DPO/ORPO); written into exports as the tokenizer's chat_template (janus_jax/prompts.py).
      seq_len: tokens per batch row (next-token positions); longer examples follow `over_length`.
      packing: pack several SFT examples per row with segment ids (SFT only; preference data is never packed).
      over_length: "truncate" (cut the end of the response; it then has no EOS) or "drop".
      eval_fraction: fraction of instructions (all rows of a prompt together) held out for eval loss; 0 = none.
        RM-schema rows have no separate prompt field and are grouped by their `input`.
      eval_source / eval_split: a separate eval set instead of eval_fraction ("" = none / same as `split`).
      seed: seeds the per-epoch shuffle and the eval hold-out.
      system_messages_per_instruction: 1, 2 or 3: keep that many of the system messages of each training
        instruction (rows sharing a `prompt`), the paper's ablation; which ones is fixed by a hash of the system
        message. SFT data only. Applied after the eval hold-out is drawn, so every k is scored on the same
        held-out instructions, which keep all their system messages.
      system_message_policy: what training rows carry as system message: "as_is" (their own), "generic" (every
        row gets `generic_system_message`: the paper's one-generic-system-message baseline) or "none" (empty:
        the bare prompt). Training rows only; held-out rows keep their own, so eval loss stays comparable.
      generic_system_message: the text of the "generic" policy.
      tokenizer: "" = the Mistral v1 SentencePiece model bundled with mistral-common; or a .model file or
        a Hugging Face tokenizer directory.
    """
    c = ml_collections.ConfigDict()
    c.source = "data/samples/sft.jsonl"
    c.split = "train"
    c.format = ""
    c.template = "mistral_inst"
    c.seq_len = 2048
    c.packing = True
    c.over_length = "truncate"
    c.eval_fraction = 0.0
    c.eval_source = ""
    c.eval_split = ""
    c.seed = 0
    c.system_messages_per_instruction = 3
    c.system_message_policy = "as_is"
    c.generic_system_message = "You are a helpful assistant."
    c.tokenizer = ""
    return c
