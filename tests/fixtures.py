"""Writers of small dataset files in every format cnnlab reads (tests make their own data)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import class_image, write_idx


def idx_files(
    folder: Path, prefix: str = "", n_train: int = 120, n_test: int = 40, classes: int = 10, offset: int = 0
) -> Path:
    """MNIST-format IDX files named ``{prefix}train-images-idx3-ubyte.gz`` etc."""
    if not prefix:
        return write_idx(folder, n_train, n_test)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % classes + offset).astype(np.uint8)
        images = rng.integers(0, 50, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, :, (c - offset) % 28] = 255
        with gzip.open(folder / f"{prefix}{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return folder


def _rgb_set(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = np.stack([class_image(int(c), 32, rng) for c in labels])  # (n, 32, 32, 3)
    return images, labels


def cifar10_files(root: Path, per_batch: int = 20) -> Path:
    """cifar-10-batches-py/ with five small training batches, a test batch and meta (bytes keys, as the
    real files unpickle under Python 3)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, labels = _rgb_set(per_batch, 10, i)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": images.transpose(0, 3, 1, 2).reshape(per_batch, -1), b"labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{k}" for k in range(10)]}, f)
    return root


def cifar100_files(root: Path, n: int = 200) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in (("train", 0), ("test", 1)):
        images, labels = _rgb_set(n, 100, seed)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(n, -1), "fine_labels": labels.tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{k}" for k in range(100)]}, f)
    return root


def svhn_files(folder: Path, n: int = 60) -> Path:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in (("train_32x32.mat", 0), ("test_32x32.mat", 1)):
        images, labels = _rgb_set(n, 10, seed)
        y = np.where(labels == 0, 10, labels).reshape(-1, 1)  # SVHN writes digit 0 as 10
        savemat(str(folder / name), {"X": images.transpose(1, 2, 3, 0), "y": y})
    return folder


def csv_dataset(root: Path, multilabel: bool = False, n: int = 40, header: bool = True, delimiter: str = ",") -> Path:
    """images/ plus labels.csv; multi-label rows carry one or two labels."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = ["cat", "dog", "owl", "fox"]
    lines = ["path,labels" if header else None]
    for i in range(n):
        c = i % 4
        Image.fromarray(class_image(c, 24, rng)).save(root / "images" / f"{i:03d}.png")
        labels = [names[c]] + ([names[(c + 1) % 4]] if multilabel and i % 3 == 0 else [])
        cell = " ".join(labels)
        lines.append(f"images/{i:03d}.png{delimiter}{cell}")
    path = root / ("labels.tsv" if delimiter == "\t" else "labels.csv")
    path.write_text("\n".join(line.replace(",", delimiter) for line in lines if line is not None) + "\n")
    return path


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()
