"""The metric catalogue: one row per scalar figure cnnlab computes on a split — its name, label,
direction, data kind, whether it is a share in [0, 1] and whether it is a headline figure. Every
display and check is derived from it: the CLI table, the report's tiles, the seed and CV summaries,
metrics.json's share check, export metadata, the TTA and leak-free figures, the board's columns and
the monitorable metrics' directions. A new metric is its function (cnnlab.evaluate.metrics) and
its row here; ``tests/evaluate/test_metrics.py`` checks the two agree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "METRICS",
    "Direction",
    "Kind",
    "Metric",
    "catalogue",
    "headline",
    "metric",
    "shares",
]

Direction = Literal["min", "max"]
Kind = Literal["any", "single-label", "multi-label"]


@dataclass(frozen=True)
class Metric:
    """One scalar figure of a split's metrics.json."""

    name: str  # the key in metrics.json (and val_<name> in history.csv where monitorable)
    label: str  # how a table, a tile and a column name it
    direction: Direction  # whether higher ("max") or lower ("min") is better
    kind: Kind  # the data it exists for
    share: bool  # a value in [0, 1] (checked when metrics.json is read)
    headline: bool  # shown in report tiles, seed/CV summaries, export metadata, TTA/leak-free figures, the board

    def as_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("name", "label", "direction", "kind", "share", "headline")}


METRICS: list[Metric] = [
    Metric("accuracy", "accuracy", "max", "any", True, True),  # multi-label: subset accuracy (every label right)
    Metric("balanced_accuracy", "balanced accuracy", "max", "single-label", True, True),
    Metric("top3_accuracy", "top-3 accuracy", "max", "single-label", True, False),
    Metric("top5_accuracy", "top-5 accuracy", "max", "single-label", True, False),
    Metric("macro_f1", "macro F1", "max", "any", True, True),
    Metric("weighted_f1", "weighted F1", "max", "any", True, False),
    Metric("weighted_auc", "weighted AUC", "max", "single-label", True, True),
    Metric("weighted_area_ratio", "weighted AR", "max", "single-label", False, False),  # 2·AUC − 1, in [−1, 1]
    Metric("log_loss", "log loss", "min", "single-label", False, True),
    Metric("ece", "ECE", "min", "single-label", True, True),
    Metric("subset_of_truth_accuracy", "seed-003 accuracy", "max", "multi-label", True, True),
    Metric("hamming_loss", "Hamming loss", "min", "multi-label", True, False),
    Metric("micro_f1", "micro F1", "max", "multi-label", True, True),
    Metric("mean_average_precision", "mAP", "max", "multi-label", True, True),
]


def catalogue() -> list[Metric]:
    """Every row, in display order (read at call time, so a registered metric shows everywhere)."""
    return list(METRICS)


def metric(name: str) -> Metric:
    """The row of ``name``.

    Raises:
        KeyError: a name the catalogue does not hold.
    """
    for m in METRICS:
        if m.name == name:
            return m
    raise KeyError(f"no metric named {name!r} in the catalogue; known: {', '.join(m.name for m in METRICS)}")


def headline() -> tuple[str, ...]:
    """The names of the headline figures."""
    return tuple(m.name for m in METRICS if m.headline)


def shares() -> tuple[str, ...]:
    """The names of the figures that are shares in [0, 1]."""
    return tuple(m.name for m in METRICS if m.share)
