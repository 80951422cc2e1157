"""OpenAI-compatible serving of janus-jax models (`janus-serve`)."""

# janus-serve's defaults, here (no imports) so that the programs that start a janus-serve read them: the most
# choices (n) one request may ask for, the decode slots (rows decoded together), and the decode steps between
# two admissions of newcomers.
DEFAULT_MAX_N = 16
DEFAULT_MAX_BATCH = 32
DEFAULT_CHUNK_TOKENS = 8
