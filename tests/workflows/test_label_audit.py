"""cnnlab cv --audit-labels: with 5 % of digits' labels flipped at random, the audit ranks most of
the flipped images near the top; --exclude retrains without the flagged ones on the same folds."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from cnnlab.cli import main

FLAGS = ["--model", "mlp", "--hidden", "64", "--epochs", "8", "--batch-size", "64", "-q", "--no-report"]


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory):
    """Digits as PNG files and a label CSV in which 5 % of the labels are flipped to another class."""
    d = load_digits()
    root = tmp_path_factory.mktemp("noisy")
    rng = np.random.default_rng(0)
    labels = d.target.copy()
    flipped = rng.choice(len(labels), int(0.05 * len(labels)), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    rows = ["path,label"]
    for i, im in enumerate(d.images):
        Image.fromarray((im * 16).clip(0, 255).astype(np.uint8)).save(root / f"{i:04d}.png")
        rows.append(f"{i:04d}.png,d{labels[i]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", {f"{i:04d}.png" for i in flipped}


@pytest.mark.long
def test_audit_ranks_flipped_labels_first_and_exclude_retrains_on_the_same_folds(noisy_digits, tmp_path, capsys):
    csv_path, flipped = noisy_digits
    audited = tmp_path / "cv-audit"
    assert main(["cv", "--data", str(csv_path), "--folds", "5", "--out", str(audited), "--audit-labels", *FLAGS]) == 0
    assert "likely label errors" in capsys.readouterr().out
    rows = list(csv.DictReader((audited / "label_audit.csv").open()))
    test = set(json.loads((audited / "r1-fold1" / "split.json").read_text())["indices"]["test"])
    assert len(rows) == 1797 - 180 and [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    audited_flipped = flipped & {r["path"] for r in rows}  # the ones outside the data's test split
    top = {r["path"] for r in rows[: len(rows) // 10]}
    share = len(top & audited_flipped) / len(audited_flipped)
    with capsys.disabled():
        hits = len(top & audited_flipped)
        print(f"flipped labels in the audit's top 10 %: {share:.3f} ({hits} of {len(audited_flipped)})")
    assert share >= 0.7
    assert all(float(a["quality"]) <= float(b["quality"]) for a, b in zip(rows, rows[1:]))
    issues = list(csv.DictReader((audited / "label_issues.csv").open()))
    assert issues and all(r["issue"] == "True" for r in issues)
    page = (audited / "label_audit.html").read_text()
    assert page.count("data:image/png;base64") == 60 and "given d" in page
    assert json.loads((audited / "cv.json").read_text())["label_audit"]["issues"] == len(issues)
    assert test  # (the fold's held-out part)

    cleaned = tmp_path / "cv-clean"
    exclude = audited / "label_issues.csv"
    assert (
        main(["cv", "--data", str(csv_path), "--folds", "5", "--out", str(cleaned), "--exclude", str(exclude), *FLAGS])
        == 0
    )
    left_out = {r["path"] for r in issues}
    for fold in range(1, 6):
        a = json.loads((audited / f"r1-fold{fold}" / "split.json").read_text())["indices"]
        b = json.loads((cleaned / f"r1-fold{fold}" / "split.json").read_text())["indices"]
        assert a["test"] == b["test"]  # the same held-out images: the two CVs pair fold by fold
        assert set(b["train"]) < set(a["train"])
    paths = [f"{i:04d}.png" for i in range(1797)]
    b = json.loads((cleaned / "r1-fold1" / "split.json").read_text())["indices"]
    assert not {paths[i] for i in b["train"] + b["val"]} & left_out
    capsys.readouterr()
    assert main(["compare", str(audited), str(cleaned)]) == 0
    assert "corrected resampled t-test" in capsys.readouterr().out
