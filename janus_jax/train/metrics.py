"""Step metrics to JSONL and TensorBoard, a progress bar, and model-FLOPs utilisation."""

from __future__ import annotations

import json
import math
import os
import sys

import jax
from etils import epath

from janus_jax.jsonio import Appender, read_jsonl
from janus_jax.model import MistralConfig
from janus_jax.paths import to_path, write_atomic, write_figure

# Dense bf16 peak FLOP/s per device, for MFU. Unknown devices (CPU) report MFU only when
# `train.peak_flops_per_device` is set in the config.
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def peak_flops_per_device() -> float | None:
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None


def train_flops_per_token(cfg: MistralConfig, seq_len: int, scored_fraction: float = 1.0) -> float:
    """6 N for the weights plus the attention score/value matmuls (forward + backward).

    The LM head runs only at scored positions (janus_jax.model.lm_head), so its 6·V·D counts for
    `scored_fraction` of the tokens (the trainer passes the share its objective scores).
    """
    head = cfg.vocab_size * cfg.hidden_size
    body = cfg.num_params - 2 * head  # the embedding lookup is no matmul
    context = seq_len if cfg.sliding_window is None else min(seq_len, cfg.sliding_window)
    attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * context / 2
    return 6 * body + 6 * head * scored_fraction + attn


def _tensorboard_writer() -> type:
    """tensorboardX's SummaryWriter, imported without torch.

    Why: tensorboardX imports torch when it is installed (for tensors we never log), which added 3 s to every
    run's start; scalars need none of it. A process that already holds torch keeps it.
    """
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return SummaryWriter


class MetricsWriter:
    """Appends one JSON object per logged step; mirrors scalars to TensorBoard on process 0.

    The workdir may be local or `gs://` (tensorboardX writes there through google-cloud-storage).
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled
        self.path = to_path(workdir) / "metrics.jsonl"
        self._rows: Appender | None = None  # opened at the first row
        self._tb = None
        if enabled:
            try:
                SummaryWriter = _tensorboard_writer()
                self._tb = SummaryWriter(str(to_path(workdir) / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self._tb = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        if self._rows is None:
            self._rows = Appender(self.path)
        self._rows.write(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()
        if self._tb is not None:
            self._tb.close()


def _clean(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The rows of `workdir/metrics.jsonl` (none before the first log); a line torn by a kill is skipped."""
    return read_jsonl(to_path(workdir) / "metrics.jsonl", skip_bad_lines=True, missing_ok=True)


def last_logged(workdir: str | os.PathLike) -> dict:
    """The latest value of every metric already in metrics.jsonl (what a finished run reports on rerun)."""
    last: dict = {}
    for row in read_metrics(workdir):
        last.update(row)
    return last


def truncate_metrics(workdir: str | os.PathLike, step: int) -> None:
    """After a resume, drop rows logged past the restored checkpoint; they are recomputed exactly."""
    path = to_path(workdir) / "metrics.jsonl"
    if path.exists():
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in read_metrics(workdir) if r["step"] <= step))


def plot_loss(workdir: str | os.PathLike) -> epath.Path | None:
    """loss.png beside metrics.jsonl: train loss per step, eval loss as points."""
    workdir = to_path(workdir)
    rows = read_metrics(workdir)
    train_rows = [r for r in rows if isinstance(r.get("loss"), float)]
    if not train_rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train loss", color="#1f77b4")
    eval_rows = [r for r in rows if isinstance(r.get("eval/loss"), float)]
    if eval_rows:
        steps, losses = [r["step"] for r in eval_rows], [r["eval/loss"] for r in eval_rows]
        ax.plot(steps, losses, "o-", label="eval loss", color="#d62728")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(workdir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = workdir / "loss.png"
    write_figure(fig, out)
    plt.close(fig)
    return out
