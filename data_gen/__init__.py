"""Synthesis of the Multifaceted Collection (Janus): instructions -> preference sets -> system messages
-> gold responses -> SFT / small / DPO / ORPO / RM splits and Multifaceted-Bench-style rubrics.

Run ``python -m data_gen run --help``. Every stage reads the previous stage's rows from ``OUT/stages``
and is resumable; LLM calls go through ``janus_jax.llm.LLMClient`` (cached, rate-limited, retried).
"""
