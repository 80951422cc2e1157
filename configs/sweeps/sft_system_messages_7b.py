"""The paper's Table 10 at 7B, plus the one-generic-system-message baseline, on the hub collection.

Points (each `configs/sft.py:janus_7b`: Mistral-7B-v0.2, seq 8192 packed, 32 sequences a step, 4 epochs):
  generic  1 row per instruction, every system message replaced by "You are a helpful assistant."
  k=1      1 system message per instruction (Janus* 7B's data, drawn from the full collection)
  k=2      2 per instruction
  k=3      all 3 (Janus 7B)
Every point reads the same collection and draws the same rows (a hash of each row picks them), so k=1 and
generic train on the same replies. The paper trains each for 4 epochs, so the points differ in steps.

    python -m launch sweep configs/sweeps/sft_system_messages_7b.py --target slurm --nodes 1 --dry-run
"""


def get_sweep():
    return {
        "base": "configs/sft.py:janus_7b",
        "points": [
            {"data.system_message_policy": "generic", "data.system_messages_per_instruction": 1},
            {"data.system_messages_per_instruction": 1},
            {"data.system_messages_per_instruction": 2},
            {"data.system_messages_per_instruction": 3},
        ],
    }
