"""Evaluation: metrics (pure functions) and their presentation."""

from cnnlab.evaluate.metrics import classification_metrics, compute_metrics, multilabel_metrics

__all__ = ["classification_metrics", "compute_metrics", "multilabel_metrics"]
