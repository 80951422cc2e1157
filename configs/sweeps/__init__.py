"""Sweep files for `python -m launch sweep`: a base config and a grid or list of overrides each."""
