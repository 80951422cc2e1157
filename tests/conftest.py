"""Test-wide settings: 8 fake CPU devices so every sharding path runs on a laptop."""

import os

from xla_flags import xla_flags

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
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
# The CPU decode-attention kernel is built once per machine into the same cache folder.
os.environ.setdefault("JANUS_KERNEL_CACHE", os.path.join(_REPO, ".pytest_cache", "kernels"))
# Tests draw random numbers with jax's non-partitionable threefry: on CPU it compiles a draw of a new
# multi-dimensional shape in under a second where the partitionable one (jax's default, which runs keep for
# sharded initialisation on pods) takes 4-10 s, and tests draw hundreds of shapes. Draws are sharding-
# invariant either way. tests/test_chain.py runs its programs with the default.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "false")

import pytest  # noqa: E402

# The test files that take longest from a cold compilation cache (pytest --durations=0), longest first.
# With one file per worker (`--dist loadfile --no-loadscope-reorder`), starting them first keeps a long
# file from starting last and running alone while the other worker idles.
LONGEST_FIRST = (
    "test_chain.py",
    "test_train_sft.py",
    "test_serve.py",
    "test_sample.py",
    "test_train_preference.py",
    "test_best_of_n.py",
    "test_launch_local.py",
    "test_plan.py",
    "test_decode_cache.py",
    "test_model_parity.py",
    "test_custom_gradients.py",
    "test_readme_commands.py",
    "test_data_gen_janus_serve.py",
    "test_gcs.py",
    "test_repro.py",
    "test_generate.py",
    "test_attention.py",
    "test_eval_benchmarks.py",
    "test_local_hub.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order within a rank


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory) -> dict[str, str]:
    """A local Hugging Face hub (janus_jax.local_hub) built once per session: the environment variables
    that make its hub ids resolve offline, for the programs a test starts."""
    from janus_jax.local_hub import build, environment

    return environment(build(tmp_path_factory.mktemp("local_hub")))
