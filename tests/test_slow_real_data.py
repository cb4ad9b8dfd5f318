"""Long checks on the real Fashion-MNIST (Debian's dataset-fashion-mnist): `make test-slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab import api
from cnnlab.workflows.resolve import build_config

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist (make setup)"),
]


def test_demo_cnn_reaches_090_test_accuracy(tmp_path):
    """make demo: the default net and recipe (cnn-bn, a 2-epoch one-cycle here)."""
    res = api.train(
        build_config(None, {"data.source": "fashion-mnist", "run.out": str(tmp_path / "demo")}), progress=False
    )
    assert res.metrics["accuracy"] >= 0.90
    assert len(res.history) == 2
    assert (res.run / "report.html").is_file()


def test_efficientnet_lite0_transfer_on_1000_images_reaches_082(tmp_path):
    cfg = build_config(
        None,
        {
            "data.source": "fashion-mnist",
            "model.name": "efficientnet-lite0",
            "model.freeze": "backbone",
            "data.train_per_class": 100,
            "data.input_size": 112,
            "data.val_size": 1000,
            "optim.lr": 3e-3,
            "train.epochs": 30,
            "run.out": str(tmp_path / "eff"),
            "run.report": False,
        },
    )
    res = api.train(cfg, progress=False)
    assert res.metrics["num_samples"] == 10_000 and res.metrics["accuracy"] >= 0.82


def test_fine_tune_auto_beats_the_frozen_head_by_two_points(tmp_path):
    """Issue 10: the default fine-tuning recipe on 1,000 Fashion-MNIST images at 112 px, scored on
    the full 10,000-image test set, against the frozen head on cached features."""
    base = {
        "data.source": "fashion-mnist",
        "model.name": "efficientnet-lite0",
        "data.train_per_class": 100,
        "data.input_size": 112,
        "data.val_size": 1000,
        "run.report": False,
    }
    frozen = api.train(
        build_config(
            None,
            {
                **base,
                "model.freeze": "backbone",
                "optim.lr": 3e-3,
                "train.epochs": 30,
                "run.out": str(tmp_path / "frozen"),
            },
        ),
        progress=False,
    )
    tuned = api.train(
        build_config(None, {**base, "model.fine_tune": "auto", "run.out": str(tmp_path / "ft")}), progress=False
    )
    head = tuned.history[:10]
    unfrozen = [h["seconds"] for h in tuned.history[10:]]
    print(
        f"frozen {frozen.metrics['accuracy']:.4f}, fine-tune auto {tuned.metrics['accuracy']:.4f}; "
        f"frozen-phase epochs {[h['seconds'] for h in head]} s, unfrozen {unfrozen} s"
    )
    assert tuned.metrics["num_samples"] == 10_000
    assert tuned.metrics["accuracy"] >= frozen.metrics["accuracy"] + 0.02
    assert max(h["seconds"] for h in head) < 1.0  # the frozen phase runs at feature-cache speed


def test_a_30_second_budget_on_fashion_mnist_stops_at_an_epoch_end_and_evaluates(tmp_path):
    """--time 30s on the whole of Fashion-MNIST with 30 epochs planned: it stops at an epoch end
    within 30 s + one epoch, says why, and leaves a completed run scored on the test split."""
    import json

    from cnnlab.runs.store import RunFolder

    out = tmp_path / "t"
    cfg = build_config(None, {"data.source": "fashion-mnist", "train.epochs": 30, "train.time": "30s",
                              "run.out": str(out), "run.report": False})  # fmt: skip
    res = api.train(cfg, progress=False)
    status = RunFolder(out).status()
    assert status["status"] == "completed" and "--time budget of 30 s" in status["stop_reason"]
    per_epoch = status["train_seconds"] / status["epochs_done"]
    assert 1 <= status["epochs_done"] < 30 and status["train_seconds"] <= 30 + per_epoch
    assert json.loads((out / "metrics.json").read_text())["split"] == "test" and res.metrics["accuracy"] > 0.8
