"""Classification metrics as pure functions over labels and probabilities (scikit-learn inside)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnlab.core.metrics import catalogue, metric


def _sk() -> Any:
    """scikit-learn's metrics, imported on first use (1.3 s that training's start need not wait for)."""
    import sklearn.metrics

    return sklearn.metrics


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins
    of the top-class probability (Guo et al. 2017), from the :func:`reliability` bins. Written
    by hand: scikit-learn has the reliability curve but not the summary number."""
    rel = reliability(y_true, probs, bins)
    n = max(sum(rel["count"]), 1)
    return float(sum(c / n * abs(a - f) for c, a, f in zip(rel["count"], rel["accuracy"], rel["confidence"]) if c))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 that minimises the negative log-likelihood
    of softmax(logits / T) on held-out labels; it leaves every prediction's class as it was.
    Found by scipy's bounded scalar minimiser over log T in [1/20, 20]."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    z, y = np.asarray(logits, np.float64), np.asarray(y_true)

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    found = minimize_scalar(nll, bounds=(-np.log(20), np.log(20)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def reliability(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count, for the reliability diagram."""
    conf = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        mask = which == b
        out["confidence"].append(float(conf[mask].mean()) if mask.any() else float((edges[b] + edges[b + 1]) / 2))
        out["accuracy"].append(float(correct[mask].mean()) if mask.any() else 0.0)
        out["count"].append(int(mask.sum()))
    return out


def one_vs_rest_auc(y_true: np.ndarray, probs: np.ndarray) -> tuple[list[float | None], float | None]:
    """ROC AUC of each class against the rest (None for a class absent from ``y_true``, or
    present everywhere), and their support-weighted mean."""
    per: list[float | None] = []
    weights: list[int] = []
    for c in range(probs.shape[1]):
        pos = y_true == c
        if pos.all() or not pos.any():
            per.append(None)
            continue
        per.append(float(_sk().roc_auc_score(pos, probs[:, c])))
        weights.append(int(pos.sum()))
    valid = [a for a in per if a is not None]
    weighted = float(np.average(valid, weights=weights)) if valid else None
    return per, weighted


def area_ratio(auc: float | None) -> float | None:
    """Seed 001 eq. 2: AR = 2·AUC − 1, the area between the cumulative-gains curve and the
    diagonal over the same area for the perfect model (the Gini coefficient)."""
    return None if auc is None else 2 * auc - 1


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], present: Sequence[int] | None = None
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support, confusion matrix.

    Args:
        y_true: (N,) true class indices.
        probs: (N, K) predicted probabilities.
        classes: K class names.
        present: with data that lacks some of the model's classes (another dataset), the
            class indices it has: macro/weighted F1 average over those only, and the absent
            classes are listed under ``absent_classes`` instead of counting as F1 0.
    """
    labels = list(range(len(classes)))
    averaged = labels if present is None else list(present)
    y_pred = probs.argmax(1)
    p, r, f, s = _sk().precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    auc, weighted_auc = one_vs_rest_auc(y_true, probs)
    seen = np.unique(y_true)  # the classes this data has
    top_k = {
        f"top{k}_accuracy": float(_sk().top_k_accuracy_score(y_true, probs, k=k, labels=labels))
        for k in (3, 5)
        if k < len(classes)
    }
    return {
        "num_samples": int(len(y_true)),
        "accuracy": float(_sk().accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(_sk().balanced_accuracy_score(y_true, y_pred)) if len(seen) > 1 else None,
        **top_k,
        "macro_f1": float(_sk().f1_score(y_true, y_pred, labels=averaged, average="macro", zero_division=0)),
        "weighted_f1": float(_sk().f1_score(y_true, y_pred, labels=averaged, average="weighted", zero_division=0)),
        **(
            {
                "absent_classes": [classes[i] for i in labels if i not in set(averaged)],
                "averaged_over": "the classes present in the data",
            }
            if len(averaged) < len(labels)
            else {}
        ),
        "weighted_auc": weighted_auc,
        "weighted_area_ratio": area_ratio(weighted_auc),
        "log_loss": float(_sk().log_loss(y_true, np.clip(probs, 1e-7, 1.0), labels=labels)),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {
            c: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
                "auc": auc[i],
                "area_ratio": area_ratio(auc[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": _sk().confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def subset_of_truth_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Seed 003's multi-label accuracy: a prediction set P is correct when P is not empty
    and every predicted label is true (P ⊆ truth)."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    nonempty = y_pred.any(1)
    subset = ~(y_pred & ~y_true).any(1)
    return float((nonempty & subset).mean())


def tune_thresholds(
    y_true: np.ndarray, probs: np.ndarray, grid: Sequence[float] = tuple(np.linspace(0.05, 0.95, 19))
) -> list[float]:
    """Per-class decision thresholds that maximise each class's F1 on (validation) data;
    0.5 for a class without positives."""
    y_true = np.asarray(y_true).astype(bool)
    out = []
    for c in range(y_true.shape[1]):
        if not y_true[:, c].any():
            out.append(0.5)
            continue
        scores = [_sk().f1_score(y_true[:, c], probs[:, c] >= t, zero_division=0) for t in grid]
        out.append(float(grid[int(np.argmax(scores))]))
    return out


def multilabel_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], threshold: float | Sequence[float] = 0.5
) -> dict[str, Any]:
    """Subset accuracy, seed 003's accuracy, Hamming loss, micro/macro F1, mean average
    precision and per-class precision/recall/F1/support for (N, K) multi-hot labels, at one
    threshold or one per class."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (probs >= np.asarray(threshold)).astype(int)
    p, r, f, s = _sk().precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    present = y_true.sum(0) > 0
    return {
        "num_samples": int(len(y_true)),
        "multilabel": True,
        "threshold": float(threshold) if isinstance(threshold, (int, float)) else [float(t) for t in threshold],
        "accuracy": float(_sk().accuracy_score(y_true, y_pred)),
        "subset_of_truth_accuracy": subset_of_truth_accuracy(y_true, y_pred),
        "hamming_loss": float(_sk().hamming_loss(y_true, y_pred)),
        "micro_f1": float(_sk().f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(_sk().f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(_sk().f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "mean_average_precision": float(
            _sk().average_precision_score(y_true[:, present], probs[:, present], average="macro")
        )
        if present.any()
        else 0.0,
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
    }


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], present: Sequence[int] | None = None
) -> dict[str, Any]:
    """Single- or multi-label metrics, chosen by the shape of ``y_true`` (``present``: see
    :func:`classification_metrics`).

    A diverged model's NaN outputs are scored as uninformative (uniform) predictions and the
    count is reported as ``non_finite_predictions``.
    """
    bad = ~np.isfinite(probs).all(1)
    if bad.any():
        probs = probs.copy()
        probs[bad] = 0.5 if np.asarray(y_true).ndim == 2 else 1.0 / probs.shape[1]
        out = compute_metrics(y_true, probs, classes, present)
        out["non_finite_predictions"] = int(bad.sum())
        return out
    multilabel = np.asarray(y_true).ndim == 2
    out = (
        multilabel_metrics(y_true, probs, classes)
        if multilabel
        else classification_metrics(y_true, probs, classes, present)
    )
    for row in catalogue():  # a metric added by its function (registered below) and its catalogue row
        if row.name in REGISTERED and row.kind in ("any", "multi-label" if multilabel else "single-label"):
            out[row.name] = REGISTERED[row.name](y_true, probs)
    return out


MetricFunction = Callable[[np.ndarray, np.ndarray], "float | None"]
# name → function (labels, probabilities) → figure: the scalar metrics beyond the built-in ones that
# classification_metrics and multilabel_metrics compute together (they share one confusion matrix)
REGISTERED: dict[str, MetricFunction] = {}


def register_metric(name: str) -> Callable[[MetricFunction], MetricFunction]:
    """Decorator: ``fn(y_true, probs)`` computes catalogue metric ``name`` on every split from now on.

    Raises:
        KeyError: ``name`` has no row in the catalogue (cnnlab.core.metrics): add the row first.
    """
    metric(name)

    def add(fn: MetricFunction) -> MetricFunction:
        REGISTERED[name] = fn
        return fn

    return add


def cumulative_gains(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seed 001 Fig. 4: share of positives found (y) against share of samples taken (x), taking
    samples in order of decreasing score. Its area above the diagonal, over the perfect model's,
    is the area ratio 2·AUC − 1."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(np.asarray(y_true)[order])
    x = np.arange(1, len(scores) + 1) / len(scores)
    return np.concatenate([[0.0], x]), np.concatenate([[0.0], hits / max(hits[-1], 1)])


def mapped_topk(logits: np.ndarray, target: np.ndarray, y: np.ndarray, num_classes: int, k: int = 5) -> dict[str, Any]:
    """Top-1 and top-``k`` accuracy of a net whose classes are not the data's (seed 002's
    untouched pretrained baseline): ``target[s]`` is the data class net class ``s`` stands for
    (-1: none). An image is right at top-1 when its highest net class maps onto its class (an
    unmapped one is wrong), at top-k when any of its ``k`` highest does.

    Returns:
        top1, topk, k, mapped (share of images whose top-1 net class is mapped), per_class
        (top-1 per data class; None for a class with no image)."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = np.asarray(target)[order] == np.asarray(y)[:, None]
    top1, topk = hits[:, 0], hits.any(axis=1)
    per_class = [float(top1[y == c].mean()) if (y == c).any() else None for c in range(num_classes)]
    return {
        "top1": float(top1.mean()),
        "topk": float(topk.mean()),
        "k": int(k),
        "mapped": float((np.asarray(target)[order[:, 0]] >= 0).mean()),
        "per_class": per_class,
    }
