"""Metric functions against scikit-learn, the area ratio identity and seed 003's accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cnnlab.evaluate.metrics import (
    area_ratio,
    classification_metrics,
    cumulative_gains,
    expected_calibration_error,
    multilabel_metrics,
    subset_of_truth_accuracy,
    tune_thresholds,
)


@pytest.fixture
def single():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 2.0 * np.eye(4)[y] * rng.random((300, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_single_label_metrics_agree_with_scikit_learn(single):
    y, p = single
    m = classification_metrics(y, p, ["a", "b", "c", "d"])
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["top3_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=3))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["weighted_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="weighted"))
    per_auc = skm.roc_auc_score(np.eye(4)[y], p, average=None)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred)
    for i, c in enumerate("abcd"):
        pc = m["per_class"][c]
        got = (pc["precision"], pc["recall"], pc["f1"], pc["support"])
        assert got == pytest.approx((prec[i], rec[i], f1[i], sup[i]))
        assert pc["auc"] == pytest.approx(per_auc[i])
        assert pc["area_ratio"] == pytest.approx(2 * per_auc[i] - 1)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_area_ratio_is_the_normalised_area_under_the_cumulative_gains_curve(single):
    y, p = single
    for c in range(4):
        pos = (y == c).astype(int)
        x, gains = cumulative_gains(pos, p[:, c])
        area_model = np.trapezoid(gains, x) - 0.5
        share = pos.mean()
        area_perfect = (1 - share / 2) - 0.5  # the perfect model finds every positive first
        ar_from_curve = area_model / area_perfect
        assert ar_from_curve == pytest.approx(area_ratio(skm.roc_auc_score(pos, p[:, c])), abs=0.01)


def test_expected_calibration_error():
    y = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    assert expected_calibration_error(y, perfect) == 0.0
    overconfident = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])  # 90% sure, 50% right
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.4)
    probs = np.random.default_rng(1).dirichlet(np.ones(3), 500)
    labels = np.random.default_rng(2).integers(0, 3, 500)
    from sklearn.calibration import calibration_curve

    correct = probs.argmax(1) == labels
    acc, conf = calibration_curve(correct, probs.max(1), n_bins=15, strategy="uniform")
    assert 0 <= expected_calibration_error(labels, probs) <= max(abs(acc - conf))


def test_seed_003_accuracy_worked_example():
    truth = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    pred = np.array(
        [
            [1, 0, 0],  # {a} ⊆ {a, b}, not empty → correct (subset accuracy says wrong)
            [1, 1, 0],  # {a, b} ⊄ {a} → wrong
            [0, 0, 0],  # empty prediction → wrong
            [0, 0, 1],  # exact → correct
        ]
    )
    assert subset_of_truth_accuracy(truth, pred) == 0.5
    assert skm.accuracy_score(truth, pred) == 0.25


def test_multilabel_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    y = (rng.random((200, 5)) < 0.3).astype(int)
    p = np.clip(y * 0.5 + rng.random((200, 5)) * 0.6, 0, 1)
    m = multilabel_metrics(y, p, list("abcde"))
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert m["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["mean_average_precision"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert m["per_class"]["c"]["support"] == int(y[:, 2].sum())


def test_thresholds_tuned_on_validation_beat_one_half():
    rng = np.random.default_rng(4)
    y = (rng.random((400, 3)) < 0.4).astype(int)
    p = np.clip(y * 0.35 + rng.random((400, 3)) * 0.5, 0, 1)  # positives score 0.35..0.85: 0.5 is too high
    t = tune_thresholds(y[:200], p[:200])
    assert all(0.3 <= x <= 0.5 for x in t)
    tuned = multilabel_metrics(y[200:], p[200:], list("abc"), threshold=t)
    fixed = multilabel_metrics(y[200:], p[200:], list("abc"))
    assert tuned["macro_f1"] > fixed["macro_f1"]


# the non-figure keys of a split's metrics (counts, tables, notes): everything else is a catalogue row
NOT_FIGURES = {
    "num_samples",
    "per_class",
    "confusion_matrix",
    "absent_classes",
    "averaged_over",
    "multilabel",
    "threshold",
}


def _figures(m: dict) -> set[str]:
    return set(m) - NOT_FIGURES


def test_the_keys_the_metric_functions_return_equal_the_catalogues():
    from cnnlab.core.metrics import catalogue
    from cnnlab.evaluate.metrics import compute_metrics

    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 400)  # more than 5 classes: top-3 and top-5 exist
    probs = rng.dirichlet(np.ones(7), 400)
    single = compute_metrics(y, probs, [f"c{i}" for i in range(7)])
    assert _figures(single) == {m.name for m in catalogue() if m.kind in ("any", "single-label")}
    ym = rng.random((200, 4)) < 0.3
    multi = compute_metrics(ym, rng.random((200, 4)), [f"c{i}" for i in range(4)])
    assert _figures(multi) == {m.name for m in catalogue() if m.kind in ("any", "multi-label")}
    for m in catalogue():  # a share is in [0, 1] wherever it is computed
        for figures in (single, multi):
            if m.share and m.name in figures:
                assert 0 <= figures[m.name] <= 1, m.name


def test_a_metric_registered_without_its_catalogue_row_is_refused():
    from cnnlab.evaluate.metrics import register_metric

    with pytest.raises(KeyError, match="no metric named 'nowhere'"):
        register_metric("nowhere")


def test_the_monitorable_metrics_and_their_directions_come_from_the_catalogue():
    from cnnlab.core.metrics import catalogue
    from cnnlab.core.monitor import direction, monitorable

    for m in catalogue():
        if m.name != "accuracy":
            assert m.name in monitorable() and direction(f"val_{m.name}") == m.direction
    assert direction("val_acc") == "max" and direction("train_loss") == "min"
