"""DPO on the tiny preset: beta x learning rate (the paper's Janus+DPO uses beta 0.1, lr 5e-7 at 7B).

`configs/dpo.py:tiny` starts from the tiny SFT run in runs/demo/sft, so run `make demo` first.

    python -m launch sweep configs/sweeps/dpo_beta_lr.py --target local
"""


def get_sweep():
    return {
        "base": "configs/dpo.py:tiny",
        "grid": {"dpo.beta": [0.05, 0.1, 0.5], "optimizer.lr": [1e-4, 1e-3]},
    }
