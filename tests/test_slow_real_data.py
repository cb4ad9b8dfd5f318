"""Long checks on the real Fashion-MNIST (Debian's dataset-fashion-mnist): `make test-slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab import api
from cnnlab.config import build_config

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist (make setup)")]


def test_demo_cnn_reaches_090_test_accuracy(tmp_path):
    res = api.train(build_config(None, {"data.source": "fashion-mnist", "model.name": "cnn", "train.epochs": 6,
                                        "run.out": str(tmp_path / "demo")}), progress=False)
    assert res.metrics["accuracy"] >= 0.90
    assert (res.run / "report.html").is_file()


def test_efficientnet_lite0_transfer_on_1000_images_reaches_082(tmp_path):
    cfg = build_config(None, {
        "data.source": "fashion-mnist", "model.name": "efficientnet-lite0", "model.freeze": "backbone",
        "data.train_per_class": 100, "data.input_size": 112, "data.val_size": 1000, "optim.lr": 3e-3,
        "train.epochs": 30, "run.out": str(tmp_path / "eff"), "run.report": False,
    })
    res = api.train(cfg, progress=False)
    assert res.metrics["num_samples"] == 10_000 and res.metrics["accuracy"] >= 0.82
