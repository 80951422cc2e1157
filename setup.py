"""janus-jax: train, serve and evaluate LLMs that follow the values written in a system message."""

from setuptools import find_packages, setup

# The JAX stack is pinned exactly: these versions are the newest set that installs together on
# Python 3.11, and tests/test_smoke_versions.py fails loudly when an upgrade changes behaviour.
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections>=1.0,<2",
    "numpy>=1.26",
    "transformers>=5.0,<6",
    "datasets>=3.0",
    "tensorflow-datasets>=4.9",
    "openai>=1.50",
    "uvicorn>=0.30,<1",  # janus-serve's HTTP layer (ASGI over h11)
    "mistral-common>=1.5",  # ships the Mistral v1 SentencePiece model used offline
    "sentencepiece>=0.2",
    "matplotlib>=3.8",  # loss curves and eval report plots
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "tqdm>=4.66",
    # gs:// workdirs (janus_jax/paths.py): etils.epath reaches GCS through fsspec's gcsfs when TensorFlow is
    # absent; it also brings google-cloud-storage, through which tensorboardX writes gs:// event files.
    "gcsfs>=2024.2",
]

setup(
    name="janus-jax",
    version="0.1.0",
    description="Janus (system-message generalization) in JAX: Mistral SFT/DPO/ORPO/RM, data synthesis, judged eval",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["janus_jax*", "data_gen*", "eval*", "launch*", "configs*"]),
    include_package_data=True,
    package_data={
        "": ["*.json", "*.jsonl", "*.txt", "*.md", "*.yaml", "*.csv"],
        "eval": ["data/**/*"],
        "janus_jax.model": ["kernels/*.cc"],  # the CPU decode-attention kernel, compiled on first use
    },
    install_requires=CORE,
    extras_require={
        # torch is only the HF reference in tests; 2.13.0 is the CPU build that installs offline here.
        # jax[tpu] adds libtpu (a 213 MB wheel, as large as torch's): the TPU compiler, which janus-plan and
        # its tests run on CPU-only machines to plan TPU slices. JAX itself stays on CPU (JAX_PLATFORMS=cpu).
        # gcp-storage-emulator: the local GCS that tests/test_gcs.py trains into (pinned: tests/gcs_emulator.py
        # adds two GCS behaviours to its handlers). pytest-xdist: `make test` runs test files on every core
        # (up to 4); on 2 cores that halves the suite's wall clock, which hand-written sharding could not do.
        "test": [
            "torch==2.13.0",
            "jax[tpu]==0.10.2",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.6",
            "ruff>=0.6",
            "gcp-storage-emulator==2026.7.19",
        ],
        "tpu": ["jax[tpu]==0.10.2"],
        "gpu": ["jax[cuda12]==0.10.2"],
    },
    entry_points={
        "console_scripts": [
            "janus-train=janus_jax.cli.train:main",
            "janus-export=janus_jax.cli.export:main",
            "janus-plan=janus_jax.cli.plan:main",
            "janus-generate=janus_jax.cli.generate:main",
            "janus-serve=janus_jax.cli.serve:main",
            "janus-precompute-ref=janus_jax.cli.precompute_ref:main",
            "janus-best-of-n=janus_jax.cli.best_of_n:main",
        ]
    },
)
