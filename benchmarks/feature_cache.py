"""Transfer learning on real Fashion-MNIST: EfficientNet-Lite0 (ImageNet weights, frozen backbone) with and
without the feature cache. Prints per-epoch times and test accuracy.

Usage: python benchmarks/feature_cache.py [--epochs 3] [--per-class 100] [--size 112]

Needs the real Fashion-MNIST files (make setup installs Debian's dataset-fashion-mnist).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

from cnnlab import api
from cnnlab.workflows.resolve import build_config


def run(out: Path, epochs: int, per_class: int, size: int, cache: bool) -> tuple[list[float], float]:
    cfg = build_config(
        None,
        {
            "data.source": "fashion-mnist",
            "model.name": "efficientnet-lite0",
            "model.freeze": "backbone",
            "data.train_per_class": per_class,
            "data.input_size": size,
            "data.val_size": 1000,
            "optim.lr": 3e-3,
            "train.epochs": epochs,
            "train.feature_cache": cache,
            "run.out": str(out),
        },
    )
    res = api.train(cfg, progress=False)
    return [h["seconds"] for h in res.history], res.metrics["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=112)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        direct, acc_direct = run(Path(tmp) / "direct", args.epochs, args.per_class, args.size, cache=False)
        cached, acc_cached = run(Path(tmp) / "cached", args.epochs, args.per_class, args.size, cache=True)
    later_direct = statistics.mean(direct[1:]) if len(direct) > 1 else direct[0]
    later_cached = statistics.mean(cached[1:]) if len(cached) > 1 else cached[0]
    print(
        f"EfficientNet-Lite0, frozen backbone, {args.per_class} images/class, {args.size}×{args.size}, "
        f"{args.epochs} epochs"
    )
    print(f"without feature cache: epochs {', '.join(f'{s:.2f}s' for s in direct)}; test accuracy {acc_direct:.4f}")
    print(
        f"with feature cache:    epochs {', '.join(f'{s:.3f}s' for s in cached)}; test accuracy {acc_cached:.4f} "
        "(features computed once before epoch 1, see run.json)"
    )
    print(f"per-epoch speed-up after the first: {later_direct / max(later_cached, 1e-6):.0f}×")


if __name__ == "__main__":
    main()
