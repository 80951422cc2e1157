"""The paper's ablation: train on 1, 2 or 3 system messages per instruction (Janus* 7B used 1 of 3).

Runs on the synthetic world of `make repro` (configs/repro.py): every point holds out the same instructions
(the world's sft_heldout.jsonl) and trains for the same number of steps. Build the world first:

    python -m data_gen.world generate --out runs/repro/world
    python -m launch sweep configs/sweeps/sft_system_messages.py --target local

The one-generic-system-message baseline is `configs/repro.py:generic`. At 7B on the hub collection:
`configs/sweeps/sft_system_messages_7b.py`.
"""


def get_sweep():
    return {
        "base": "configs/repro.py:sm3",
        "grid": {"data.system_messages_per_instruction": [1, 2, 3]},
    }
