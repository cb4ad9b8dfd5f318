"""Classification metrics as pure functions over labels and probabilities (scikit-learn inside)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    log_loss,
    precision_recall_fscore_support,
)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support, confusion matrix.

    Args:
        y_true: (N,) true class indices.
        probs: (N, K) predicted probabilities.
        classes: K class names.
    """
    labels = list(range(len(classes)))
    y_pred = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "num_samples": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "log_loss": float(log_loss(y_true, np.clip(probs, 1e-7, 1.0), labels=labels)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def subset_of_truth_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Seed 003's multi-label accuracy: a prediction set P is correct when P is not empty
    and every predicted label is true (P ⊆ truth)."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    nonempty = y_pred.any(1)
    subset = ~(y_pred & ~y_true).any(1)
    return float((nonempty & subset).mean())


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                       threshold: float = 0.5) -> dict[str, Any]:
    """Subset accuracy, seed 003's accuracy, Hamming loss, micro/macro F1, mean average
    precision and per-class precision/recall/F1/support for (N, K) multi-hot labels."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (probs >= threshold).astype(int)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    present = y_true.sum(0) > 0
    return {
        "num_samples": int(len(y_true)),
        "multilabel": True,
        "threshold": threshold,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "subset_of_truth_accuracy": subset_of_truth_accuracy(y_true, y_pred),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "mean_average_precision": float(average_precision_score(y_true[:, present], probs[:, present],
                                                                average="macro")) if present.any() else 0.0,
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
    }


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Single- or multi-label metrics, chosen by the shape of ``y_true``.

    A diverged model's NaN outputs are scored as uninformative (uniform) predictions and the
    count is reported as ``non_finite_predictions``.
    """
    bad = ~np.isfinite(probs).all(1)
    if bad.any():
        probs = probs.copy()
        probs[bad] = 0.5 if np.asarray(y_true).ndim == 2 else 1.0 / probs.shape[1]
        out = compute_metrics(y_true, probs, classes)
        out["non_finite_predictions"] = int(bad.sum())
        return out
    if np.asarray(y_true).ndim == 2:
        return multilabel_metrics(y_true, probs, classes)
    return classification_metrics(y_true, probs, classes)


def format_metrics_table(m: dict[str, Any], title: str = "") -> str:
    """A plain-text table of per-class metrics and the summary figures."""
    names = list(m["per_class"])
    w = max([len(n) for n in names] + [len("weighted avg")])
    lines = [title] if title else []
    lines.append(f"{'class':<{w}}  precision  recall     f1  support")
    for n in names:
        c = m["per_class"][n]
        lines.append(f"{n:<{w}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}")
    lines.append("")
    lines.append(f"{'accuracy':<{w}}  {m['accuracy']:.4f}   ({m['num_samples']} images)")
    lines.append(f"{'macro F1':<{w}}  {m['macro_f1']:.4f}")
    lines.append(f"{'weighted F1':<{w}}  {m['weighted_f1']:.4f}")
    return "\n".join(lines)
