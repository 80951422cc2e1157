"""Check a dataset before training: what is kept and dropped, and what the model will see.

    python -m janus_jax.data data/samples/sft.jsonl --seq_len 256

prints the data report as JSON, every reported row, and the first document of the first batch with its
trained tokens (response + EOS) between ⟦ and ⟧.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from janus_jax.data.config import default_data_config
from janus_jax.data.pipeline import build_data


def show_document(tok, batch: dict, prefix: str = "") -> str:
    """Row 0, document 1 of a batch as text, with the loss-weighted targets bracketed."""
    seg = batch[prefix + "segment_ids"][0]
    idx = np.flatnonzero(seg == 1)
    inputs, targets = batch[prefix + "input_ids"][0, idx], batch[prefix + "targets"][0, idx]
    weights = batch[prefix + "loss_weights"][0, idx]
    first = int(np.argmax(weights > 0)) if weights.any() else len(idx)
    trained = targets[weights > 0].tolist()
    eos = "</s>" if trained and trained[-1] == tok.eos_id else "(no EOS: truncated)"
    return f"{tok.decode(inputs[: first + 1].tolist())}⟦{tok.decode(trained)}{eos}⟧"


def main(argv: list[str] | None = None) -> None:
    d = default_data_config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="hub name, .jsonl/.json/.parquet file, shard directory or TFDS directory")
    p.add_argument("--split", default=d.split)
    p.add_argument("--format", default=d.format, choices=("", "sft", "dpo", "rm"))
    p.add_argument("--seq_len", type=int, default=d.seq_len)
    p.add_argument("--over_length", default=d.over_length, choices=("truncate", "drop"))
    p.add_argument("--system_messages_per_instruction", type=int, default=d.system_messages_per_instruction)
    p.add_argument("--tokenizer", default=d.tokenizer)
    args = p.parse_args(argv)
    for key in ("source", "split", "format", "seq_len", "over_length", "system_messages_per_instruction",
                "tokenizer"):
        d[key] = getattr(args, key)
    d.packing = True
    try:
        bundle = build_data(d, global_batch_size=1, num_epochs=1, process_index=0, process_count=1)
    except ValueError as e:
        if "packing applies to SFT data only" not in str(e):
            raise
        d.packing = False
        bundle = build_data(d, global_batch_size=1, num_epochs=1, process_index=0, process_count=1)
    print(json.dumps(bundle.report.as_dict(), indent=2))
    for issue in bundle.report.issues:
        print(issue)
    batch = bundle.train.batch(0)
    prefixes = [""] if bundle.format == "sft" else ["chosen_", "rejected_"]
    for prefix in prefixes:
        print(f"--- first {prefix.rstrip('_') or 'example'} ---")
        print(show_document(bundle.tokenizer, batch, prefix))


if __name__ == "__main__":
    main()
