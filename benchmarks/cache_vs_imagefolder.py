"""Epoch time of cnnlab's decode-once cache vs torchvision ImageFolder + PIL, on generated JPEGs.

Usage: python benchmarks/cache_vs_imagefolder.py [--images 5000] [--size 256] [--resize 224] [--workers 2]

Both loaders deliver normalised float batches of 64 at 224×224; the model is left out so that
only data loading is timed. The figure that matters is the second epoch: ImageFolder decodes
and resizes every JPEG again, the cache reads uint8 pixels from a memory-mapped file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_jpegs(root: Path, n: int, size: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        d = root / f"class_{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = (np.sin(xx / (7 + i % 13)) + np.cos(yy / (5 + i % 11))) * 60 + 128
        img = np.clip(base[..., None] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)


def time_imagefolder(root: Path, resize: int, workers: int, epochs: int = 2) -> list[float]:
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [transforms.Resize((resize, resize)), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.25] * 3)]
    )
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(str(root), tf),
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for _x, _y in loader:
            pass
        times.append(time.perf_counter() - t)
    return times


def time_cnnlab(root: Path, resize: int, workers: int, epochs: int = 2) -> list[float]:
    from cnnlab.data.loaders import TensorBatches
    from cnnlab.data.pipeline import prepare_data
    from cnnlab.models import get_spec
    from cnnlab.workflows.resolve import build_config

    times = []
    t = time.perf_counter()
    cfg = build_config(
        None,
        {
            "data.source": str(root),
            "data.input_size": resize,
            "data.cache": "disk",
            "data.workers": workers,
            "data.split": [1.0, 0.0, 0.0],
        },
    ).data
    data = prepare_data(cfg, get_spec("cnn"), seed=0, progress=False)
    build = time.perf_counter() - t
    for e in range(epochs):
        loader = TensorBatches(
            data.images, data.labels, data.splits["train"], 64, data.mean, data.std, shuffle=True, seed=0
        )
        loader.set_epoch(e)
        t = time.perf_counter()
        for _x, _y in loader:
            pass
        times.append(time.perf_counter() - t)
    times[0] += build  # the first epoch pays for decoding once
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--resize", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CNNLAB_CACHE"] = str(Path(tmp) / "cache")
        root = Path(tmp) / "jpegs"
        t = time.perf_counter()
        make_jpegs(root, args.images, args.size)
        print(f"generated {args.images} JPEGs {args.size}×{args.size} in {time.perf_counter() - t:.1f}s")
        folder = time_imagefolder(root, args.resize, args.workers)
        cache = time_cnnlab(root, args.resize, args.workers)
    print(f"ImageFolder + PIL ({args.workers} workers): epoch 1 {folder[0]:.2f}s, epoch 2 {folder[1]:.2f}s")
    print(f"cnnlab decode-once cache:            epoch 1 {cache[0]:.2f}s (decode + cache), epoch 2 {cache[1]:.2f}s")
    print(f"second-epoch speed-up: {folder[1] / cache[1]:.1f}×")


if __name__ == "__main__":
    main()
