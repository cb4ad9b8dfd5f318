"""Figures as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestion: Optional[float], path: Path) -> Path:
    """Smoothed loss against learning rate (log scale), with the suggested LR marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    if suggestion:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2e}")
        ax.legend()
    ax.set_title("learning-rate range test")
    return _save(fig, path)
