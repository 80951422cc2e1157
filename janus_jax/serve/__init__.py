"""OpenAI-compatible serving of janus-jax models (`janus-serve`)."""

# janus-serve's default capacity, here (no imports) so that the programs that start a janus-serve read them:
# the most choices (n) one request may ask for, and the decode slots (rows decoded together).
DEFAULT_MAX_N = 16
DEFAULT_MAX_BATCH = 32
