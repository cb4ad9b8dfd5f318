"""The study report's image-level sections: leaks between the splits, the label audit of the best
candidate's cross-validation, and the best two candidates image by image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.core.state import CvFold
from cnnlab.evaluate.stats import agreement
from cnnlab.workflows.cv.audit import out_of_fold
from cnnlab.workflows.cv.folds import cv_group
from tests.workflows.test_leak_guard import leaky_folder  # noqa: F401  (a fixture)


@pytest.mark.long
def test_a_cross_validated_study_shows_leaks_doubted_labels_and_where_its_best_two_differ(leaky_folder, tmp_path):  # noqa: F811
    out = tmp_path / "study"
    argv = ["study", str(leaky_folder), "--models", "mlp,cnn-small", "--folds", "3", "--budget", "90s", "--no-tune"]
    assert main([*argv, "--audit-labels", "--out", str(out), "-q"]) == 0
    state = json.loads((out / "study.json").read_text())
    summ = state["summary"]
    page = (out / "report.html").read_text()
    # leaks: the planted copies in test/ are found by the study's inspection and shown
    insp = json.loads((out / "inspect.json").read_text())
    assert len(insp["near_leaks_across_splits"]) >= 9
    assert "Leaks between the splits" in page and "copy_of_" in page
    # the label audit of the best candidate's folds
    a = summ["label_audit"]
    assert a["candidate"] == summ["winner"] and (out / a["folder"] / "label_audit.html").is_file()
    assert "Labels the models doubt" in page and "label_audit.html" in page
    # the best two, image by image, from their out-of-fold predictions
    g = summ["agreement"]
    assert [g["a"], g["b"]] == [r["name"] for r in summ["rows"][:2]] and g["on"] == "out-of-fold"
    by_hand = []
    for row in summ["rows"][:2]:
        cv = json.loads((out / row["run"] / "cv.json").read_text())
        idx, y, p = out_of_fold(cv_group(out / row["run"]), [CvFold(**r) for r in cv["runs"]])
        order = np.argsort(idx)
        by_hand.append((idx[order], y[order], p[order]))
    expected = agreement(by_hand[0][1], by_hand[0][2], by_hand[1][2])
    assert g["kappa"] == expected["kappa"] and g["ensemble_accuracy"] == expected["ensemble_accuracy"]
    assert g["only_a"] == by_hand[0][0][expected["only_a"]].tolist()
    assert "image by image (out-of-fold images)" in page and "Cohen" in page
    shown = min(30, len(g["only_a"])) + min(30, len(g["only_b"]))
    with np.load(out / "agreement.npz") as z:
        assert len(z["index"]) == shown
    # a damaged thumbnail file costs the thumbnails, not the report
    (out / "agreement.npz").write_bytes(b"PK\x03\x04 not a zip")
    from cnnlab.reports.study import write_study_report
    from cnnlab.workflows.study.state import Study

    write_study_report(Study.open(out))
    assert "image by image (out-of-fold images)" in (out / "report.html").read_text()
