"""The one bootstrap of cnnlab: resamples of the images (or folds) drawn from a seed, and the 95 %
percentile intervals every page and command prints — of a mean, of accuracy and macro-F1, of mAP and
of a paired difference of any metric.

Hand-written on purpose, small: scipy's ``stats.bootstrap`` hides its draws, and the callers need
them — the same draws serve accuracy and macro-F1 (vectorised over a thousand draws at once) and
become per-image weights for mAP. Every interval here has its coverage checked on simulated data in
tests/evaluate/test_stats.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "DRAWS",
    "accuracy_f1_intervals",
    "bootstrap_draws",
    "bootstrap_weights",
    "mean_interval",
    "paired_bootstrap",
    "percentile_interval",
]

DRAWS = 1000  # resamples of the images for a test-set interval


def bootstrap_draws(n: int, draws: int, rng: np.random.Generator | int) -> np.ndarray:
    """(draws, n) indices: each row is one resample, with replacement, of ``n`` items."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    return rng.integers(0, n, (draws, n))


def bootstrap_weights(n: int, draws: int, rng: np.random.Generator | int) -> np.ndarray:
    """(draws, n): how many times each of ``n`` items is drawn in each resample of ``bootstrap_draws``."""
    idx = bootstrap_draws(n, draws, rng)
    return np.stack([np.bincount(row, minlength=n) for row in idx]) if n else np.zeros((draws, 0), int)


def percentile_interval(values: np.ndarray | Sequence[float]) -> list[float]:
    """The 95 % percentile interval of bootstrap replicates (NaN replicates left out)."""
    v = np.asarray(values, float)
    return [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]


def _means(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The mean of ``values`` in each resample (rows of ``idx``), in chunks: memory."""
    return np.concatenate([values[d].mean(1) for d in np.array_split(idx, max(1, min(10, len(idx))))])


def mean_interval(values: Sequence[float] | np.ndarray, seed: int = 0, draws: int = DRAWS) -> list[float]:
    """95 % percentile bootstrap interval of the mean of ``values`` (one value, or all equal: itself)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or np.allclose(v, v[0]):
        return [float(v.mean()), float(v.mean())]
    return percentile_interval(_means(v, bootstrap_draws(len(v), draws, seed)))


def _accuracy_f1(y: np.ndarray, p: np.ndarray, k: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 (over the classes present in each resample, as sklearn's macro average)
    of each resample (rows of ``idx``), vectorised: a confusion matrix per resample by one bincount."""
    accs, f1s = [], []
    for chunk in np.array_split(idx, max(1, len(idx) // 100)):
        yy, pp = y[chunk], p[chunk]
        accs.append((yy == pp).mean(1))
        codes = (yy * k + pp) + (np.arange(len(chunk)) * k * k)[:, None]
        cm = np.bincount(codes.ravel(), minlength=len(chunk) * k * k).reshape(len(chunk), k, k)
        tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
        denom = cm.sum(1) + cm.sum(2)
        present = cm.sum(2) > 0
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        f1s.append((f1 * present).sum(1) / np.maximum(present.sum(1), 1))
    return np.concatenate(accs), np.concatenate(f1s)


def accuracy_f1_intervals(
    y: np.ndarray, pred: np.ndarray, k: int, seed: int = 0, draws: int = DRAWS
) -> dict[str, dict[str, float | list[float]]]:
    """Accuracy and macro-F1 of predicted labels ``pred`` against ``y`` (``k`` classes), each with its
    95 % percentile bootstrap interval over the images."""
    y, pred = np.asarray(y, int), np.asarray(pred, int)
    acc, f1 = _accuracy_f1(y, pred, k, bootstrap_draws(len(y), draws, seed))
    full_acc, full_f1 = _accuracy_f1(y, pred, k, np.arange(len(y))[None, :])
    return {
        "accuracy": {"value": float(full_acc[0]), "ci95": percentile_interval(acc)},
        "macro_f1": {"value": float(full_f1[0]), "ci95": percentile_interval(f1)},
    }


def paired_bootstrap(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    seed: int = 0,
    draws: int = 2000,
) -> tuple[float, float]:
    """95 % interval of metric(B) − metric(A), resampling the images (the same ones for both)."""
    idx = bootstrap_draws(len(y), draws, seed)
    diffs = np.array([metric(y[i], pred_b[i]) - metric(y[i], pred_a[i]) for i in idx])
    lo, hi = percentile_interval(diffs)
    return lo, hi
