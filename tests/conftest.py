"""Test-wide settings: 8 fake CPU devices so every sharding path runs on a laptop."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Many tests (and the programs they start) compile the same tiny steps: a persistent compilation cache,
# shared by every process of the session (and the xdist workers) and kept between runs, compiles each once.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_REPO, ".pytest_cache", "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Tests draw random numbers with jax's non-partitionable threefry: on CPU it compiles a draw of a new
# multi-dimensional shape in under a second where the partitionable one (jax's default, which runs keep for
# sharded initialisation on pods) takes 4-10 s, and tests draw hundreds of shapes. Draws are sharding-
# invariant either way. tests/test_chain.py runs its programs with the default.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory) -> dict[str, str]:
    """A local Hugging Face hub (janus_jax.local_hub) built once per session: the environment variables
    that make its hub ids resolve offline, for the programs a test starts."""
    from janus_jax.local_hub import build, environment

    return environment(build(tmp_path_factory.mktemp("local_hub")))
