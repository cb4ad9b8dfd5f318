"""Paired tests of two classifiers scored on the same images: McNemar's exact test, a paired
bootstrap interval of the difference of any metric, and the smallest difference a test of that
size can detect; and, for N initialisations of each model, a paired test of the seed-averaged
difference whose variance counts the seed spread. The distributions are scipy's (``binomtest``,
``bootstrap``, ``norm``, ``t``); every test's calibration on simulated classifiers is checked by
tests/evaluate/test_stats.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnlab.evaluate.bootstrap import DRAWS, bootstrap_weights, mean_interval, paired_bootstrap, percentile_interval

__all__ = [
    "accuracy_interval",
    "compare_predictions",
    "holm",
    "macro_f1",
    "mcnemar_exact",
    "minimum_detectable_difference",
    "corrected_resampled_t",
    "paired_accuracy",
    "fold_differences",
    "seeded_paired_test",
]


def accuracy_interval(correct: int, n: int, level: float = 0.95) -> list[float]:
    """The Wilson score interval of a proportion (an accuracy of ``correct`` of ``n``): scipy's
    ``binomtest(...).proportion_ci``; its coverage is checked in tests/evaluate/test_stats.py."""
    from scipy.stats import binomtest

    if n == 0:
        return [0.0, 1.0]
    ci = binomtest(int(correct), int(n)).proportion_ci(level, method="wilson")
    return [float(ci.low), float(ci.high)]


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test: are the images only A gets right as many as those only B gets right?

    The discordant pairs are binomial(n01 + n10, 1/2) under the null hypothesis; the two-sided
    p-value is scipy's exact binomial test of that (McNemar 1947; Edwards' exact form).
    """
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)
    return {"only_a_right": only_a, "only_b_right": only_b, "p": p, "test": "McNemar exact (binomial)"}


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Macro-averaged F1 over the classes present in ``y`` (NumPy, fast enough to bootstrap)."""
    tp = np.bincount(y[pred == y], minlength=k).astype(float)
    fp = np.bincount(pred[pred != y], minlength=k).astype(float)
    fn = np.bincount(y[pred != y], minlength=k).astype(float)
    present = np.bincount(y, minlength=k) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def minimum_detectable_difference(n: int, discordant: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy difference McNemar's test on ``n`` images detects with ``power`` at
    level ``alpha``, when a fraction ``discordant`` of the images is right for one model only
    (normal approximation of the paired-proportions test, Connor 1987)."""
    from scipy.stats import norm

    if n <= 0 or discordant <= 0:
        return float("nan")
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    # solve d = (za*sqrt(q) + zb*sqrt(q - d**2)) / sqrt(n) for d by fixed-point iteration
    d = (za + zb) * np.sqrt(discordant / n)
    for _ in range(50):
        d = (za * np.sqrt(discordant) + zb * np.sqrt(max(discordant - d * d, 0.0))) / np.sqrt(n)
    return float(d)


def compare_predictions(y: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """A paired comparison of two single-label classifiers on the same images: accuracies,
    McNemar's exact test, bootstrap intervals of the accuracy and macro-F1 differences (B − A) and
    the minimum detectable difference for this test size."""
    y = np.asarray(y).astype(int)
    k = max(probs_a.shape[1], probs_b.shape[1])
    pa, pb = probs_a.argmax(1), probs_b.argmax(1)
    ca, cb = pa == y, pb == y
    mc = mcnemar_exact(ca, cb)
    n = len(y)
    return {
        "images": n,
        "accuracy_a": float(ca.mean()),
        "accuracy_b": float(cb.mean()),
        "accuracy_difference": float(cb.mean() - ca.mean()),
        "accuracy_ci95": tuple(mean_interval(cb.astype(float) - ca.astype(float), seed, 2000)),
        "macro_f1_difference": macro_f1(y, pb, k) - macro_f1(y, pa, k),
        "macro_f1_ci95": paired_bootstrap(y, pa, pb, lambda t, p: macro_f1(t, p, k), seed),
        "mcnemar": mc,
        "minimum_detectable_difference": minimum_detectable_difference(
            n, (mc["only_a_right"] + mc["only_b_right"]) / n if n else 0.0
        ),
    }


def agreement(y: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, Any]:
    """Two single-label classifiers on the same images, image by image: the 2 × 2 table of right
    and wrong (``agreement``: [[both right, only A right], [only B right, both wrong]]), Cohen's κ
    of their predicted classes (scikit-learn's; agreement beyond chance, descriptive, no test), the
    oracle bound (right when either is: no combination of the two does better), and the ensemble
    that averages their probabilities, with the Wilson interval of its accuracy. ``only_a`` and
    ``only_b`` are positions (into ``y``) of the images only one gets right."""
    from sklearn.metrics import cohen_kappa_score

    y = np.asarray(y).astype(int)
    pa, pb = probs_a.argmax(1), probs_b.argmax(1)
    ca, cb = pa == y, pb == y
    ens = (probs_a + probs_b) / 2
    ce = ens.argmax(1) == y
    n = len(y)
    kappa = cohen_kappa_score(pa, pb) if len(set(pa) | set(pb)) > 1 else 1.0
    return {
        "agreement": [[int((ca & cb).sum()), int((ca & ~cb).sum())], [int((~ca & cb).sum()), int((~ca & ~cb).sum())]],
        "same_prediction": float((pa == pb).mean()) if n else 0.0,
        "kappa": float(kappa),
        "oracle_accuracy": float((ca | cb).mean()) if n else 0.0,
        "ensemble_accuracy": float(ce.mean()) if n else 0.0,
        "ensemble_ci95": accuracy_interval(int(ce.sum()), n),
        "only_a": np.flatnonzero(ca & ~cb).tolist(),
        "only_b": np.flatnonzero(~ca & cb).tolist(),
    }


def paired_accuracy(right_a: np.ndarray, right_b: np.ndarray, seed: int = 0, draws: int = DRAWS) -> dict[str, Any]:
    """Accuracy difference A − B on the same images (``right_x``: True where that model is right): its
    95 % paired bootstrap interval and McNemar's exact test on the images only one of them gets right."""
    a, b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    diff = a.astype(float) - b.astype(float)
    mc = mcnemar_exact(a, b)
    return {
        "difference": float(diff.mean()) if len(diff) else 0.0,
        "ci95": mean_interval(diff, seed, draws) if len(diff) else [0.0, 0.0],
        "p": mc["p"],
        "mcnemar": mc,
    }


def corrected_resampled_t(differences: np.ndarray, test_train_ratio: float) -> dict[str, float]:
    """Nadeau & Bengio's (2003) corrected resampled t-test of the mean of J fold differences: the
    folds share training images, so the variance is inflated by n_test/n_train beside 1/J. Written
    by hand (a one-line correction of the t statistic; scipy has the t distribution)."""
    from scipy.stats import t as student_t

    d = np.asarray(differences, float)
    j = len(d)
    var = float(d.var(ddof=1)) if j > 1 else 0.0
    if j < 2 or var == 0:
        return {"t": float("nan"), "p": 1.0 if np.allclose(d, 0) else 0.0, "df": j - 1}
    tstat = float(d.mean() / np.sqrt((1 / j + test_train_ratio) * var))
    return {"t": tstat, "p": float(2 * student_t.sf(abs(tstat), j - 1)), "df": j - 1}


def fold_differences(differences: Sequence[float] | np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Fold-by-fold differences of one metric: their mean, a 95 % bootstrap interval of it and the
    two-sided Wilcoxon signed-rank p-value (scipy's)."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, float)
    return {
        "mean_difference": float(d.mean()),
        "ci95": mean_interval(d, seed, 10_000),
        "wilcoxon_p": 1.0 if np.allclose(d, 0) else float(wilcoxon(d).pvalue),
    }


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (one winner against each other
    candidate), in the given order. Written by hand (scipy has no Holm; statsmodels is not a
    dependency): sort ascending, multiply the i-th smallest by (m - i), keep the running maximum."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def seeded_paired_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Two models trained with several seeds each, every seed scored on the same images
    (``correct_x``: seeds × images, True where that seed's model is right): is B's mean accuracy
    different from A's?

    The difference of the seed-averaged accuracies varies with the images (per-image differences,
    paired) and with the seeds (each model's accuracy spread over its seeds); its variance adds both:
    ``var(d)/n + sd_a**2/N_a + sd_b**2/N_b``, with Welch-Satterthwaite degrees of freedom, and a t
    test. The seed terms also hold some image noise, so the test errs on the careful side. Written by
    hand: no library combines the two sources; scipy gives the t distribution."""
    from scipy.stats import t as student_t

    a, b = np.atleast_2d(np.asarray(correct_a, float)), np.atleast_2d(np.asarray(correct_b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError("both models must be scored on the same images")
    n = a.shape[1]
    d = b.mean(0) - a.mean(0)
    acc_a, acc_b = a.mean(1), b.mean(1)
    sd_a = float(acc_a.std(ddof=1)) if len(acc_a) > 1 else 0.0
    sd_b = float(acc_b.std(ddof=1)) if len(acc_b) > 1 else 0.0
    parts = [(float(d.var(ddof=1)) / n if n > 1 else 0.0, n - 1)]
    parts += [(sd**2 / len(acc), len(acc) - 1) for sd, acc in ((sd_a, acc_a), (sd_b, acc_b)) if len(acc) > 1]
    var = sum(v for v, _ in parts)
    gap = float(d.mean()) if n else 0.0
    if var == 0:
        p, df, half = (1.0 if gap == 0 else 0.0), float("nan"), 0.0
    else:
        df = var**2 / sum(v**2 / max(k, 1) for v, k in parts if v > 0)
        tstat = gap / np.sqrt(var)
        p, half = float(2 * student_t.sf(abs(tstat), df)), float(student_t.ppf(0.975, df) * np.sqrt(var))
    return {
        "images": n,
        "seeds_a": len(acc_a),
        "seeds_b": len(acc_b),
        "accuracy_a": float(acc_a.mean()),
        "accuracy_b": float(acc_b.mean()),
        "seed_sd_a": sd_a,
        "seed_sd_b": sd_b,
        "difference": gap,
        "ci95": [gap - half, gap + half],
        "p": p,
        "df": df,
        "test": "paired t over images with the seed spread added (Welch-Satterthwaite df)",
    }


def mean_average_precision(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Macro mean average precision of (N, K) multi-hot labels ``y`` and ``scores`` of shape
    (..., N, K), each image counted ``weights`` (..., N) times (a bootstrap draw's multiplicities);
    classes without a positive in a draw are left out of its mean. Returns shape ``...``.

    Hand-written: sklearn's average_precision_score (the same definition, ties grouped, the step
    sum Σ (R_n − R_{n−1}) P_n) takes one weighting per call, 5 ms each; a bootstrap or a
    permutation test needs a thousand. Checked equal to sklearn in tests/evaluate/test_stats.py."""
    y = np.asarray(y, bool)
    scores = np.asarray(scores, float)
    w = np.ones(y.shape[0]) if weights is None else np.asarray(weights, float)
    lead = np.broadcast_shapes(scores.shape[:-2], w.shape[:-1])
    scores = np.broadcast_to(scores, (*lead, *y.shape))
    w = np.broadcast_to(w, (*lead, y.shape[0]))
    aps = []
    for c in range(y.shape[1]):
        s = scores[..., c]
        order = np.argsort(-s, axis=-1, kind="stable")
        s_sorted = np.take_along_axis(s, order, -1)
        w_sorted = np.take_along_axis(w, order, -1)
        tp = np.cumsum(w_sorted * y[:, c][order], -1)
        total = np.cumsum(w_sorted, -1)
        end = np.ones(s.shape, bool)  # the last image of each group of tied scores: one threshold
        end[..., :-1] = s_sorted[..., :-1] != s_sorted[..., 1:]
        positives = tp[..., -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(positives > 0, tp / positives, 0.0)
            precision = np.where(total > 0, tp / total, 0.0)
        r_end = np.where(end, recall, 0.0)
        before = np.concatenate([np.zeros((*s.shape[:-1], 1)), np.maximum.accumulate(r_end, -1)[..., :-1]], -1)
        ap = np.where(end, (recall - before) * precision, 0.0).sum(-1)
        aps.append(np.where(positives[..., 0] > 0, ap, np.nan))
    return np.nanmean(np.stack(aps, -1), -1)


def paired_map_test(
    y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, seed: int = 0, resamples: int = 999
) -> dict[str, Any]:
    """mAP of A − mAP of B on the same images: a 95 % paired bootstrap interval and the p-value of
    a paired permutation test (scipy's, swapping the two models' scores of each image at random:
    exact when the models are equally good, whatever the dependence between images' scores)."""
    from scipy import stats

    y = np.asarray(y, bool)
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)

    def gap(x: np.ndarray, z: np.ndarray, axis: int = -1) -> np.ndarray:
        x, z = np.moveaxis(x, axis, -2), np.moveaxis(z, axis, -2)  # (..., N, K)
        return mean_average_precision(y, x) - mean_average_precision(y, z)

    rng = np.random.default_rng(seed)
    test = stats.permutation_test(
        (a, b), gap, permutation_type="samples", vectorized=True, n_resamples=resamples, axis=0, random_state=rng
    )
    draws = bootstrap_weights(len(y), resamples + 1, rng)
    boot = mean_average_precision(y, a, draws) - mean_average_precision(y, b, draws)
    return {
        "difference": float(gap(a, b, axis=0)),
        "ci95": percentile_interval(boot),
        "p": float(test.pvalue),
        "test": f"paired permutation test of mAP ({resamples} random swaps of the two models' scores per image)",
    }


def map_interval(y: np.ndarray, scores: np.ndarray, seed: int = 0, draws: int = 1000) -> list[float]:
    """95 % percentile bootstrap interval of mAP over the images."""
    return percentile_interval(mean_average_precision(y, scores, bootstrap_weights(len(y), draws, seed)))
