"""The metrics a run can monitor and their directions: pure data that the config schema, the
checkpoint and early-stopping callbacks, the plateau schedule and sweep objectives all read."""

from __future__ import annotations

from typing import Literal

__all__ = ["MONITORABLE", "Direction", "direction"]

Direction = Literal["min", "max"]

# Every metric that can be monitored (--monitor val_<name>, best checkpoint, early stopping, the
# plateau schedule, sweep objectives): the data it exists for, and its direction. Declared once here.
MONITORABLE: dict[str, tuple[str, Direction]] = {
    "loss": ("any", "min"),
    "acc": ("any", "max"),
    "macro_f1": ("any", "max"),
    "weighted_f1": ("any", "max"),
    "balanced_accuracy": ("single-label", "max"),
    "top3_accuracy": ("single-label", "max"),
    "weighted_auc": ("single-label", "max"),
    "weighted_area_ratio": ("single-label", "max"),
    "log_loss": ("single-label", "min"),
    "ece": ("single-label", "min"),
    "micro_f1": ("multi-label", "max"),
    "mean_average_precision": ("multi-label", "max"),
    "subset_of_truth_accuracy": ("multi-label", "max"),
    "hamming_loss": ("multi-label", "min"),
}


def direction(monitor: str) -> Direction:
    """'min' or 'max': whether lower or higher values of ``monitor`` (``val_<name>``,
    ``train_loss``/``train_acc`` or a bare name) are better, from :data:`MONITORABLE`.

    Raises:
        ValueError: a metric whose direction is not declared (never guessed).
    """
    name = monitor.removeprefix("val_").removeprefix("train_")
    if name not in MONITORABLE:
        raise ValueError(f"no direction is declared for metric {monitor!r}; known: {', '.join(MONITORABLE)}")
    return MONITORABLE[name][1]
