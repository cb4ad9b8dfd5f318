"""Shared fixtures: a private cache, tiny generated datasets, IDX files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def pytest_configure(config):
    """Under pytest-xdist, each worker gets its share of the cores for PyTorch's threads (and its
    child processes, through OMP_NUM_THREADS): two workers of two threads each on two cores wait on
    each other's intra-op barriers (train/threads.py measured 2-9x slower steps). Tests of the thread
    policy set their own counts; the `alone` tests run without workers and keep all cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if os.environ.get("PYTEST_XDIST_WORKER") and workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = str(max(1, cores // workers))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = share
        import torch

        torch.set_num_threads(int(share))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _legible_figures(monkeypatch):
    """Every figure a test makes cnnlab draw is checked: no overlapping or clipped text."""
    from cnnlab.evaluate import plots
    from tests.figcheck import checked_save

    problems: list[str] = []
    monkeypatch.setattr(plots, "save_figure", checked_save(plots.layout, problems))
    yield problems
    assert not problems, problems


def write_idx(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Write gzipped MNIST-format IDX files whose class is visible in the pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 6, 4:24] = 255  # a bright bar whose row encodes the class
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return folder


def class_image(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB image whose class is a bright square in one of four corners."""
    arr = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
    h = size // 2
    r, c = divmod(cls % 4, 2)
    arr[r * h : (r + 1) * h, c * h : (c + 1) * h] = 230
    return arr


def make_folder_dataset(
    root: Path, classes: int = 3, per_class: int = 12, size: int = 24, seed: int = 0, splits: tuple[str, ...] = ()
) -> Path:
    """A class-per-folder tree of PNGs (optionally under split folders)."""
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for c in range(classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(class_image(c, size, rng)).save(d / f"img_{i:03d}.png")
    return root


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "shapes")


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    return write_idx(tmp_path / "idx")
