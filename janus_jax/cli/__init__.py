"""The command-line programs, apart from the library they stand on.

janus-train (train.py), janus-export (export.py), janus-plan (plan.py), janus-generate (generate.py),
janus-serve (serve.py), janus-precompute-ref (precompute_ref.py), janus-best-of-n (best_of_n.py). Every
program that reads a model takes any `janus_jax.load.load_model` source: an HF directory, a hub id, or a
training checkpoint.
"""
