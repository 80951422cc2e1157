"""The report's figures: interval bars and stacked outcome shares (matplotlib, written as PNG)."""

from __future__ import annotations

import os

from janus_jax.paths import write_figure

COLORS = {"win": "#2a9d8f", "tie": "#e9c46a", "loss": "#e76f51", "bar": "#457b9d", "edge": "#1d3557",
          "both good": "#8ab17d", "both bad": "#b0b0b0"}


def _axes(n_rows: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.45 * max(n_rows, 2)), dpi=150)
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def _save(fig, path: str | os.PathLike) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_figure(fig, path)
    plt.close(fig)


def interval_plot(labels: list[str], ests: list[dict], title: str, xlabel: str, path: str | os.PathLike,
                  xlim: tuple[float, float] | None = None) -> None:
    """Horizontal bars with their bootstrap intervals; labels ending in "average" are drawn darker."""
    fig, ax = _axes(len(labels), title)
    ys = list(range(len(labels)))[::-1]
    values = [e["value"] for e in ests]
    lows = [e["value"] - e["low"] if e.get("low") == e.get("low") else 0 for e in ests]
    highs = [e["high"] - e["value"] if e.get("high") == e.get("high") else 0 for e in ests]
    colors = [COLORS["edge"] if label.endswith("average") else COLORS["bar"] for label in labels]
    ax.barh(ys, values, color=colors, height=0.55, alpha=0.85)
    ax.errorbar(values, ys, xerr=[lows, highs], fmt="none", ecolor=COLORS["edge"], capsize=3, linewidth=1.2)
    for y, v, e in zip(ys, values, ests, strict=True):
        ax.text(e.get("high", v) if e.get("high") == e.get("high") else v, y, f"  {v:.2f}", va="center", fontsize=8)
    ax.set_yticks(ys, labels, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    if xlim:
        ax.set_xlim(*xlim)
    _save(fig, path)


def share_plot(rows: list[tuple[str, dict[str, float]]], kinds: tuple[str, ...], title: str, xlabel: str,
               path: str | os.PathLike) -> None:
    """One stacked 0-100% bar per row: the share of each outcome kind (e.g. win / tie / loss)."""
    fig, ax = _axes(len(rows), title)
    ys = list(range(len(rows)))[::-1]
    for y, (_, shares) in zip(ys, rows, strict=True):
        left = 0.0
        for kind in kinds:
            value = shares[kind]
            ax.barh(y, value, left=left, color=COLORS.get(kind, COLORS["bar"]), height=0.55,
                    label=kind if y == ys[0] else None)
            if value >= 6:
                ax.text(left + value / 2, y, f"{value:.1f}%", ha="center", va="center", fontsize=8, color="white")
            left += value
    ax.set_yticks(ys, [label for label, _ in rows], fontsize=9)
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.legend(ncol=len(kinds), loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    _save(fig, path)
