"""Evaluation: metrics (pure functions) and their presentation."""

from .metrics import (
    classification_metrics,
    compute_metrics,
    format_metrics_table,
    multilabel_metrics,
)

__all__ = ["classification_metrics", "compute_metrics", "format_metrics_table", "multilabel_metrics"]
