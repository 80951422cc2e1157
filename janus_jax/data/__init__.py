"""Training data: Multifaceted Collection rows -> validated records -> token arrays -> batches.

Entry point: `build_data(config.data, global_batch_size=..., num_epochs=...)` returns train/eval pipelines
whose `batch(step)` is a pure function of the step, plus a `DataReport` of what was kept and dropped.
"""

from janus_jax.data.config import default_data_config
from janus_jax.data.pipeline import DataBundle, PairPipeline, SFTPipeline, build_data
from janus_jax.data.report import DataReport, Issue

__all__ = [
    "DataBundle",
    "DataReport",
    "Issue",
    "PairPipeline",
    "SFTPipeline",
    "build_data",
    "default_data_config",
]
