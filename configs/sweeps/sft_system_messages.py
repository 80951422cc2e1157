"""The paper's ablation: train on 1, 2 or 3 system messages per instruction (Janus* 7B used 1 of 3).

Runs on the tiny preset; for the 7B runs on a pod or cluster, point `base` at "configs/sft.py:janus_7b"
and drop `fixed`.

    python -m launch sweep configs/sweeps/sft_system_messages.py --target local
"""


def get_sweep():
    return {
        "base": "configs/sft.py:tiny",
        "fixed": {"train.num_epochs": 4},  # ~28 steps a point instead of the preset's ~210
        "grid": {"data.system_messages_per_instruction": [1, 2, 3]},
    }
