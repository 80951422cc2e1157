"""One trainer for SFT, DPO, ORPO and the reward model; the objective is a plug-in (tasks.py)."""
