"""Launchers (local processes, TPU pods, SLURM), config sweeps and their results tables.

See ``python -m launch --help``; the job command is the same on every target.
"""
