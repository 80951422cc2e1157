"""OpenAI-compatible serving of janus-jax models (`janus-serve`)."""
