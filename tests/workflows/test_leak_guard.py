"""--on-leak: training finds evaluation images that copy training images, and warns, drops or refuses."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from cnnlab.cli import main

FLAGS = ["--model", "mlp", "--hidden", "32", "--epochs", "1", "-q", "--no-report", "--input-size", "32"]


@pytest.fixture(scope="module")
def leaky_folder(tmp_path_factory):
    """Digits as a pre-split folder: 300 training and 60 test images, and in test/ also 10 copies
    of training images (5 re-encoded as JPEG q 60, 5 resized to 90 %)."""
    d = load_digits()
    root = tmp_path_factory.mktemp("leaky")
    ims = [Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((32, 32)) for i in range(370)]
    for i in range(360):
        split = "train" if i < 300 else "test"
        (root / split / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        ims[i].save(root / split / str(d.target[i]) / f"{i:04d}.png")
    for j, i in enumerate(range(0, 100, 10)):
        if j % 2:
            buf = io.BytesIO()
            ims[i].save(buf, "JPEG", quality=60)
            copy = Image.open(io.BytesIO(buf.getvalue()))
        else:
            copy = ims[i].resize((29, 29))
        copy.save(root / "test" / str(d.target[i]) / f"copy_of_{i:04d}.png")
    return root


def test_warn_keeps_the_copies_and_reports_test_accuracy_without_them(leaky_folder, tmp_path, caplog, capsys):
    out = tmp_path / "warn"
    assert main(["train", "--data", str(leaky_folder), "--out", str(out), *FLAGS]) == 0  # warn is the default
    leaks = json.loads((out / "leaks.json").read_text())
    copies = {e["path"] for e in leaks["pairs"]}
    planted = {p for p in copies if "copy_of_" in p}
    assert len(planted) >= 9 and len(copies) - len(planted) <= 1
    for e in leaks["pairs"]:
        if "copy_of_" in e["path"]:
            assert e["train_path"].endswith(e["path"].split("copy_of_")[1])  # paired with its original
    m = json.loads((out / "metrics.json").read_text())
    test = json.loads((out / "split.json").read_text())["indices"]["test"]
    assert len(test) == 70
    w = m["leakage"]["without_copies"]
    assert w["left_out"] == m["leakage"]["copies"]["test"] == len([e for e in leaks["pairs"] if e["split"] == "test"])
    assert w["images"] == 70 - w["left_out"]
    pred = np.load(out / "predictions.npz")
    keep = ~np.isin(pred["indices"], [e["index"] for e in leaks["pairs"]])
    assert w["accuracy"] == pytest.approx(float((pred["probs"].argmax(1) == pred["labels"])[keep].mean()), abs=1e-4)
    assert "near copies of training images" in caplog.text
    assert f"near copies of training images: accuracy {w['accuracy']:.4f}" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "near copies of training images" in page and f"accuracy <b>{w['accuracy']:.4f}</b>" in page


def test_drop_leaves_the_copies_out_and_refuse_stops_before_any_run_folder(leaky_folder, tmp_path):
    out = tmp_path / "drop"
    assert main(["train", "--data", str(leaky_folder), "--out", str(out), "--on-leak", "drop", *FLAGS]) == 0
    m = json.loads((out / "metrics.json").read_text())
    test = json.loads((out / "split.json").read_text())["indices"]["test"]
    assert m["leakage"]["dropped"] >= 9 and "without_copies" not in m["leakage"]
    assert len(test) == 70 - m["leakage"]["copies"]["test"]
    # resuming the dropped run finds nothing more to drop: the saved split stands
    assert main(["train", "--resume", str(out), "--epochs", "2", "-q"]) == 0
    assert json.loads((out / "split.json").read_text())["indices"]["test"] == test
    refused = tmp_path / "refuse"
    assert main(["train", "--data", str(leaky_folder), "--out", str(refused), "--on-leak", "refuse", *FLAGS]) == 2
    assert not refused.exists()
    off = tmp_path / "off"
    assert main(["train", "--data", str(leaky_folder), "--out", str(off), "--on-leak", "off", *FLAGS]) == 0
    assert "leakage" not in json.loads((off / "metrics.json").read_text()) and not (off / "leaks.json").exists()


def test_drop_that_would_empty_the_test_split_says_so(tmp_path, capsys):
    d = load_digits()
    for i in range(40, 50):  # a validation split of its own: every original stays in train
        (tmp_path / "val" / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).save(
            tmp_path / "val" / str(d.target[i]) / f"{i}.png"
        )
    for i in range(40):
        im = Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((32, 32))
        (tmp_path / "train" / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        im.save(tmp_path / "train" / str(d.target[i]) / f"{i}.png")
        if i < 10:  # the whole test split: copies
            (tmp_path / "test" / str(d.target[i])).mkdir(parents=True, exist_ok=True)
            im.resize((30, 30)).save(tmp_path / "test" / str(d.target[i]) / f"copy{i}.png")
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path), "--out", str(out), "--on-leak", "drop", *FLAGS]) == 2
    assert "would leave the split empty" in capsys.readouterr().err and not out.exists()
