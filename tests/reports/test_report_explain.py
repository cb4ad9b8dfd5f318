"""Report, explain, compare and several-dataset evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnlab import api
from cnnlab.cli import main
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset, write_idx


def _train(source: str, out: Path, **extra) -> api.TrainResult:
    return api.train(build_config(None, {"data.source": source, "run.out": str(out), **extra}), progress=False)


@pytest.fixture(scope="module")
def corner_run(tmp_path_factory):
    """A CNN trained where the class is decided by a bright square in one corner."""
    root = make_folder_dataset(tmp_path_factory.mktemp("corner") / "d", classes=4, per_class=30, size=32, seed=3)
    res = _train(
        str(root),
        tmp_path_factory.mktemp("runs") / "cnn",
        **{"model.name": "cnn", "data.input_size": 32, "train.epochs": 6},
    )
    return root, res


def test_gradcam_heat_concentrates_on_the_deciding_square(corner_run, tmp_path):
    root, res = corner_run
    assert res.metrics["accuracy"] > 0.9
    quadrant = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}  # class c: bright quadrant (row, col)
    shares = []
    for c in range(4):
        img = sorted((root / f"class_{c}").glob("*.png"))[0]
        out = api.explain(res.run, [img], api.ExplainSettings(out=str(tmp_path / f"e{c}")))[0]
        heat = out.heat
        assert out.predicted == f"class_{c}" and heat.shape == (32, 32)
        r, col = quadrant[c]
        quads = {
            q: heat[a * 16 : (a + 1) * 16, b * 16 : (b + 1) * 16].sum() / heat.sum() for q, (a, b) in quadrant.items()
        }
        assert max(quads, key=quads.get) == c, quads  # the deciding square is the hottest quadrant
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        assert (peak[0] // 16, peak[1] // 16) == (r, col)  # and holds the hottest pixel
        shares.append(quads[c])
        assert all(Path(f).stat().st_size > 0 for f in out.files)
    assert min(shares) > 0.4, shares  # a uniform map would put 0.25 in the square


@pytest.mark.parametrize("model", ["resnet29", "efficientnet-lite0"])
def test_explain_works_for_deep_and_pretrained_nets(model, tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    res = _train(
        str(root),
        tmp_path / "r",
        **{"model.name": model, "data.input_size": 32, "train.epochs": 1, "train.batch_size": 4, "run.report": False},
    )
    img = sorted((root / "class_1").glob("*.png"))[0]
    assert main(["explain", str(res.run), str(img), "--class", "class_0", "--out", str(tmp_path / "x")]) == 0
    printed = capsys.readouterr().out
    assert "img_000_gradcam.png" in printed
    for name in ("img_000_gradcam.png", "img_000_features.png", "filters.png"):
        assert (tmp_path / "x" / name).stat().st_size > 1000


def test_explain_on_a_dense_net_says_why_not(tmp_path, capsys):
    res = _train("digits", tmp_path / "r", **{"model.name": "mlp", "train.epochs": 1})
    png = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (8, 8), 128).save(png)
    assert main(["explain", str(res.run), str(png)]) == 2
    assert "Grad-CAM needs a convolutional layer" in capsys.readouterr().err


def test_report_is_written_after_training_and_is_self_contained(corner_run):
    _, res = corner_run
    page = (res.run / "report.html").read_text()
    for section in (
        "Summary",
        "Training curves",
        "Metrics",
        "Per class",
        "Most confused pairs",
        "Grad-CAM",
        "Samples per class",
        "Dataset",
        "Model",
        "Timing and environment",
        "Config",
    ):
        assert f">{section}<" in page, section
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert page.count("data:image/png;base64,") >= 8


def test_report_opens_in_headless_chromium_without_errors(corner_run, tmp_path):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it when run as root)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    _, res = corner_run
    errors, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1600})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto((res.run / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        loaded = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == [] and failed == [] and loaded
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # not a blank page


def test_compare_mlp_and_cnn_on_fashion_mnist_files(tmp_path, capsys):
    idx = write_idx(tmp_path / "fm", n_train=300, n_test=100)
    runs = [
        _train(
            "fashion-mnist",
            tmp_path / m,
            **{"model.name": m, "data.data_dir": str(idx), "train.epochs": 2, "run.report": False},
        )
        for m in ("mlp", "cnn")
    ]
    out = tmp_path / "cmp.html"
    assert main(["compare", str(runs[0].run), str(runs[1].run), "--out", str(out)]) == 0
    page = out.read_text()
    for r in runs:
        info = json.loads((r.run / "run.json").read_text())
        assert f"<td>{r.run.name}</td>" in page
        assert f"{info['parameters']['total']:,}" in page
        assert f"{r.metrics['accuracy']:.4f}" in page
    head, _, agreement = page.partition('<section id="agreement">')
    assert head.count("data:image/png;base64,") == 2  # the curves and the size figure
    assert "Right only for" in agreement  # two runs on one split: the images one gets right and not the other


def test_evaluate_several_datasets_with_retrieval(corner_run, tmp_path, capsys):
    root, res = corner_run
    other = make_folder_dataset(tmp_path / "other", classes=4, per_class=5, size=32, seed=11)
    assert main(["evaluate", str(res.run), "--data", str(root), "--data", str(other), "--retrieval"]) == 0
    out = capsys.readouterr().out
    # table row + mAP row + precision-at-10 row each
    assert out.count("\n" + str(root)) == 3 and out.count("\n" + str(other)) == 3
    assert "retrieval mAP" in out and "retrieval precision at 10" in out
    result = api.evaluate_datasets(res.run, api.EvaluateSettings(data=[str(root), str(other)], retrieval=True))
    m = np.asarray(result.map, dtype=float)
    assert m.shape == (2, 2) and (m > 0.5).all() and (m <= 1).all()
    assert [r.images for r in result.rows] == [120, 20]
