"""The paired tests cnnlab prints, checked for calibration and power on simulated classifiers and
against answers computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from cnnlab.evaluate.bootstrap import accuracy_f1_intervals, mean_interval, paired_bootstrap
from cnnlab.evaluate.stats import (
    accuracy_interval,
    compare_predictions,
    corrected_resampled_t,
    macro_f1,
    map_interval,
    mcnemar_exact,
    mean_average_precision,
    minimum_detectable_difference,
    paired_map_test,
    seeded_paired_test,
)


def _correct(rng, n, acc):
    return rng.random(n) < acc  # independent errors


def test_mcnemar_matches_the_exact_binomial_sum_of_a_worked_example():
    a = np.array([True] * 10 + [False] * 25 + [True] * 50)  # 10 right only for A, 25 only for B
    b = np.array([False] * 10 + [True] * 25 + [True] * 50)
    res = mcnemar_exact(a, b)
    by_hand = min(1.0, 2 * sum(math.comb(35, i) for i in range(11)) / 2**35)
    assert res["only_a_right"] == 10 and res["only_b_right"] == 25
    assert res["p"] == pytest.approx(by_hand, rel=1e-9) and res["p"] == pytest.approx(0.0167, abs=5e-4)
    assert mcnemar_exact(a, a)["p"] == 1.0


def test_mcnemar_rejects_equally_good_classifiers_in_at_most_7_percent_of_200_pairs():
    rng = np.random.default_rng(0)
    rejections = sum(mcnemar_exact(_correct(rng, 1000, 0.8), _correct(rng, 1000, 0.8))["p"] < 0.05 for _ in range(200))
    assert rejections / 200 <= 0.07, rejections


def test_mcnemar_finds_a_true_4_point_gap_on_2000_images_in_at_least_80_percent_of_pairs():
    rng = np.random.default_rng(1)
    found = sum(mcnemar_exact(_correct(rng, 2000, 0.80), _correct(rng, 2000, 0.84))["p"] < 0.05 for _ in range(200))
    assert found / 200 >= 0.80, found


def test_the_minimum_detectable_difference_is_detected_about_80_percent_of_the_time():
    rng = np.random.default_rng(2)
    n, base = 2000, 0.80
    discordant = base * (1 - base) * 2  # independent errors at about this accuracy
    mdd = minimum_detectable_difference(n, discordant)
    assert 0.02 < mdd < 0.05
    found = sum(mcnemar_exact(_correct(rng, n, base), _correct(rng, n, base + mdd))["p"] < 0.05 for _ in range(200))
    assert 0.68 <= found / 200 <= 0.92, (mdd, found)
    assert minimum_detectable_difference(4 * n, discordant) < mdd  # more images, smaller differences


def test_the_paired_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(80):
        y = np.zeros(500, int)
        pa = np.where(_correct(rng, 500, 0.75), 0, 1)
        pb = np.where(_correct(rng, 500, 0.80), 0, 1)
        lo, hi = paired_bootstrap(
            y, pa, pb, lambda t, p: float((t == p).mean()), seed=int(rng.integers(1 << 30)), draws=400
        )
        covered += lo <= 0.05 <= hi
    assert covered / 80 >= 0.85, covered


def test_macro_f1_equals_scikit_learns_over_the_classes_present():
    rng = np.random.default_rng(4)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    assert macro_f1(y, p, 5) == pytest.approx(f1_score(y, p, labels=np.unique(y), average="macro"))


def test_compare_predictions_reports_both_accuracies_the_intervals_and_the_test():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 1000)
    wrong = (y + 1) % 3
    pa = np.eye(3)[np.where(_correct(rng, 1000, 0.7), y, wrong)]
    pb = np.eye(3)[np.where(_correct(rng, 1000, 0.9), y, wrong)]
    r = compare_predictions(y, pa, pb)
    lo, hi = r["accuracy_ci95"]
    assert r["accuracy_b"] - r["accuracy_a"] == pytest.approx(r["accuracy_difference"]) and lo < 0.2 < hi
    assert r["mcnemar"]["p"] < 1e-10 and r["macro_f1_ci95"][0] > 0 and r["images"] == 1000


def test_holm_matches_a_worked_example_and_never_lowers_a_p_value():
    from cnnlab.evaluate.stats import holm

    # p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005·4, 0.01·3, 0.03·2, 0.04·1 with the running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([]) == [] and holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_the_winner_sentence_says_tied_unless_the_paired_test_says_otherwise():
    from cnnlab.core.study import StudySummary
    from cnnlab.reports.study_text import winner_sentence

    rows = [{"name": "cnn"}, {"name": "mlp"}, {"name": "vgg"}]
    tied = StudySummary(
        rows=rows,
        paired=[{"other": "mlp", "p": 0.2, "p_holm": 0.4}, {"other": "vgg", "p": 1e-4, "p_holm": 2e-4}],
    )
    ahead = StudySummary(
        rows=rows,
        paired=[{"other": "mlp", "p": 0.001, "p_holm": 0.002}, {"other": "vgg", "p": 0.01, "p_holm": 0.01}],
    )
    assert winner_sentence(tied).startswith("cnn is tied with mlp (paired test, Holm-adjusted p = 0.4)")
    assert winner_sentence(ahead).startswith("cnn ranks first, ahead of mlp")


def test_the_corrected_resampled_t_test_rejects_equal_models_over_5x2_folds_in_at_most_7_percent():
    """Two equally good models (independent errors, accuracy 0.8) cross-validated 5 × 2 on 1,000
    images: the fold differences share training images, which the Nadeau-Bengio correction accounts
    for; the naive t-test over the same folds rejects too often."""
    from scipy.stats import ttest_1samp

    from cnnlab.data.split import kfold_indices

    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(2), 500)
    rejected = naive = 0
    for _ in range(200):
        a, b = _correct(rng, 1000, 0.8), _correct(rng, 1000, 0.8)
        diffs = []
        for r in range(2):
            for _, held_out in kfold_indices(labels, 5, int(rng.integers(1 << 30)) + r):
                diffs.append(b[held_out].mean() - a[held_out].mean())
        rejected += corrected_resampled_t(np.array(diffs), 200 / 800)["p"] < 0.05
        naive += ttest_1samp(diffs, 0).pvalue < 0.05
    assert rejected / 200 <= 0.07, rejected
    assert naive >= rejected


def _seeded_model(rng, difficulty, seeds, seed_sd, shift=0.0):
    """``seeds`` trained copies of one model: each image has its own chance of being right (shared
    by every model: some images are hard), and each seed shifts that chance for all images."""
    effect = rng.normal(0, seed_sd, (seeds, 1))
    return rng.random((seeds, len(difficulty))) < np.clip(difficulty + shift + effect, 0, 1)


def test_the_seeded_paired_test_rejects_equal_models_in_at_most_7_percent_where_the_naive_one_does_not():
    """3 seeds each of two equally good models on 1,000 shared images, with a seed effect of 2 points:
    the test that adds the seed spread stays at its level; a paired t-test over the images alone
    mistakes the seeds' luck for a model difference."""
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(1)
    rejected = naive = 0
    for _ in range(200):
        difficulty = rng.beta(8, 1.5, 1000)
        a, b = _seeded_model(rng, difficulty, 3, 0.02), _seeded_model(rng, difficulty, 3, 0.02)
        rejected += seeded_paired_test(a, b)["p"] < 0.05
        naive += ttest_rel(b.mean(0), a.mean(0)).pvalue < 0.05
    assert rejected / 200 <= 0.07, rejected
    assert naive / 200 > 0.15, naive  # why the seed spread must be in the variance


def test_the_seeded_paired_test_finds_a_4_point_gap_on_2000_images_with_3_seeds():
    rng = np.random.default_rng(2)
    found = 0
    for _ in range(200):
        difficulty = rng.beta(8, 1.5, 2000) * 0.95
        a = _seeded_model(rng, difficulty, 3, 0.005)
        b = _seeded_model(rng, difficulty, 3, 0.005, shift=0.04)
        r = seeded_paired_test(a, b)
        found += r["p"] < 0.05 and r["ci95"][0] > 0
    assert found / 200 >= 0.8, found


def test_the_seeded_paired_test_on_one_seed_each_is_the_paired_t_test_over_images():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(3)
    a, b = rng.random((1, 500)) < 0.8, rng.random((1, 500)) < 0.75
    r = seeded_paired_test(a, b)
    assert r["p"] == pytest.approx(ttest_rel(b[0].astype(float), a[0].astype(float)).pvalue, rel=1e-9)
    assert r["difference"] == pytest.approx(b.mean() - a.mean())
    assert r["seed_sd_a"] == 0.0 and r["seeds_b"] == 1


def _multilabel_pair(rng, n=200, k=3, gap=0.0):
    """Labels with per-image, per-class difficulty shared by both models; each model's scores add
    its own noise (B's signal ``gap`` weaker)."""
    y = rng.random((n, k)) < 0.35
    shared = rng.normal(0, 0.7, (n, k))
    a = y * 1.0 + shared + rng.normal(0, 0.7, (n, k))
    b = y * (1.0 - gap) + shared + rng.normal(0, 0.7, (n, k))
    return y, a, b


def test_the_batched_mean_average_precision_equals_scikit_learns_with_ties_and_weights():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    for n, k in ((30, 2), (300, 5)):
        y = rng.random((n, k)) < 0.3
        p = np.round(rng.random((n, k)), 1)  # many ties
        assert mean_average_precision(y, p) == pytest.approx(average_precision_score(y, p, average="macro"))
        draws = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(5)])
        batched = mean_average_precision(y, p, draws)
        for w, got in zip(draws, batched):
            present = (y * w[:, None]).sum(0) > 0
            want = average_precision_score(y[:, present], p[:, present], average="macro", sample_weight=w)
            assert got == pytest.approx(want)


def test_the_paired_map_test_rejects_equal_models_in_at_most_7_percent_of_200_pairs():
    rng = np.random.default_rng(0)
    rejected = sum(paired_map_test(*_multilabel_pair(rng), seed=i, resamples=199)["p"] < 0.05 for i in range(200))
    assert rejected / 200 <= 0.07, rejected


def test_the_paired_map_test_finds_a_weaker_model_and_its_interval_agrees():
    rng = np.random.default_rng(1)
    found, agree = 0, 0
    for i in range(40):
        y, a, b = _multilabel_pair(rng, n=400, gap=0.5)
        t = paired_map_test(y, a, b, seed=i, resamples=199)
        found += t["p"] < 0.05
        agree += (t["p"] < 0.05) == (t["ci95"][0] > 0)  # the interval excludes 0 where the test rejects
        assert t["difference"] == pytest.approx(mean_average_precision(y, a) - mean_average_precision(y, b))
    assert found / 40 >= 0.8 and agree / 40 >= 0.9, (found, agree)


def test_a_map_interval_brackets_the_figure():
    rng = np.random.default_rng(2)
    y, a, _ = _multilabel_pair(rng)
    lo, hi = map_interval(y, a, seed=0, draws=300)
    assert lo < mean_average_precision(y, a) < hi and hi - lo < 0.2


def test_the_accuracy_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    # Wilson's interval at the sizes cnnlab prints it for (a test split of 20 to 400 images),
    # accuracies from a poor to a near-perfect classifier; 1,000 simulated test sets each
    rng = np.random.default_rng(0)
    for n, p in [(20, 0.3), (60, 0.9), (400, 0.7), (100, 0.05)]:
        hits = rng.binomial(n, p, size=1000)
        covered = np.mean([lo <= p <= hi for lo, hi in (accuracy_interval(int(k), n) for k in hits)])
        assert 0.92 <= covered <= 0.985, (n, p, covered)
    assert accuracy_interval(10, 10)[1] == 1.0 and accuracy_interval(0, 0) == [0.0, 1.0]


def test_the_bootstrap_interval_of_a_mean_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    covered = sum(
        (lambda lo_hi: lo_hi[0] <= 0.8 <= lo_hi[1])(mean_interval(_correct(rng, 400, 0.8), int(rng.integers(1 << 30))))
        for _ in range(100)
    )
    assert covered >= 88, covered
    assert mean_interval([0.7]) == [0.7, 0.7] and mean_interval([0.5, 0.5, 0.5]) == [0.5, 0.5]


def test_the_accuracy_and_macro_f1_intervals_hold_the_figures_and_cover_the_true_accuracy():
    rng = np.random.default_rng(12)
    covered = 0
    for _ in range(60):
        y = rng.integers(0, 4, 400)
        p = np.where(_correct(rng, 400, 0.7), y, (y + 1) % 4)
        r = accuracy_f1_intervals(y, p, 4, seed=int(rng.integers(1 << 30)), draws=400)
        assert r["accuracy"]["value"] == pytest.approx((y == p).mean())
        assert r["macro_f1"]["value"] == pytest.approx(f1_score(y, p, labels=np.unique(y), average="macro"))
        lo, hi = r["macro_f1"]["ci95"]
        assert lo <= r["macro_f1"]["value"] <= hi
        covered += r["accuracy"]["ci95"][0] <= 0.7 <= r["accuracy"]["ci95"][1]
    assert covered >= 51, covered


def test_the_paired_accuracy_test_rejects_equal_models_in_at_most_7_percent_and_its_interval_covers_the_gap():
    from cnnlab.evaluate.stats import paired_accuracy

    rng = np.random.default_rng(13)
    rejected = covered = 0
    for _ in range(200):
        hard = rng.random(600) < 0.3  # shared per-image difficulty: the two models' errors are correlated
        a = np.where(hard, rng.random(600) < 0.4, rng.random(600) < 0.95)
        b = np.where(hard, rng.random(600) < 0.4, rng.random(600) < 0.95)
        t = paired_accuracy(a, b, seed=int(rng.integers(1 << 30)), draws=300)
        rejected += t["p"] < 0.05
        covered += t["ci95"][0] <= 0.0 <= t["ci95"][1]
    assert rejected / 200 <= 0.07 and covered / 200 >= 0.88, (rejected, covered)


def test_every_bootstrap_and_every_test_lives_in_evaluate():
    """One copy of each statistic: no module outside cnnlab.evaluate draws resamples, computes a
    percentile interval or calls a test distribution of scipy's."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "cnnlab"
    pattern = re.compile(
        r"scipy\.stats import .*\b(bootstrap|wilcoxon|t as|ttest|binomtest|norm|permutation_test)\b"
        r"|np\.percentile\(|np\.nanpercentile\(|\.integers\(0, n(, \(|\)| ,)"
    )
    found = [
        f"{p.relative_to(src)}:{i}"
        for p in src.rglob("*.py")
        if "evaluate" not in p.parts
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"statistics outside cnnlab.evaluate (use evaluate/stats.py or evaluate/bootstrap.py): {found}"
