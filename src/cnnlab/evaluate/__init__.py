"""Evaluation: metrics (pure functions) and their presentation."""

from .metrics import classification_metrics, format_metrics_table

__all__ = ["classification_metrics", "format_metrics_table"]
