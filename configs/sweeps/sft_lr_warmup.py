"""Tiny SFT sweep, learning rate x warmup steps: 4 short points that run on a laptop CPU.

python -m launch sweep configs/sweeps/sft_lr_warmup.py --target local
python -m launch collect runs/sweeps/sft_lr_warmup
"""


def get_sweep():
    return {
        "base": "configs/sft.py:tiny",
        "fixed": {"train.num_epochs": 4},  # ~28 steps a point instead of the preset's ~210
        "grid": {"optimizer.lr": [1e-3, 3e-3], "optimizer.warmup_steps": [0, 10]},
    }
