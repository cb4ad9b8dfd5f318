"""Where images come from: built-in datasets by name and class-per-folder trees on disk."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import CnnlabError
from ..registry import Registry
from .images import GREY_MODES, IMAGE_EXTENSIONS, decode_file, describe_error

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class SourceImages:
    """Images of one dataset before splitting, decoded or at their native size.

    Attributes:
        images: (N, C, H, W) uint8.
        labels: (N,) int64 class indices into ``classes``.
        classes: class names, index order.
        given_splits: splits the source defines itself (e.g. ``{"train": idx, "test": idx}``).
        paths: one path per image for file-based sources, else None.
        skipped: ``{"path", "reason"}`` for every file that could not be read.
        native_size: the source's own image side for built-ins; None for files resized on read.
        native_channels: 1 or 3.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    given_splits: dict[str, np.ndarray] = field(default_factory=dict)
    paths: Optional[list[str]] = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    native_size: Optional[int] = None
    native_channels: int = 1


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset known by name."""

    name: str
    description: str
    loader: Callable[..., SourceImages]
    native_size: int
    native_channels: int
    num_classes: int


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def cache_dir() -> Path:
    """cnnlab's cache folder: $CNNLAB_CACHE, else ~/.cache/cnnlab."""
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab")


FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _torchvision_root(data_dir: Optional[str], folder: str, download: bool) -> Path:
    """Find IDX files and lay them out as torchvision's MNIST-family classes expect.

    Looks in ``data_dir`` (plain or .gz files, or a torchvision root), then Debian's
    location; .gz files are decompressed once into the cache.
    """
    candidates = [Path(data_dir)] if data_dir else [DEBIAN_FASHION_MNIST]
    root = cache_dir() / "torchvision"
    raw = root / folder / "raw"
    for cand in candidates:
        if (cand / folder / "raw" / _IDX_FILES[0]).exists():
            return cand
        if all((cand / f).exists() or (cand / f"{f}.gz").exists() for f in _IDX_FILES):
            raw.mkdir(parents=True, exist_ok=True)
            for f in _IDX_FILES:
                if (raw / f).exists():
                    continue
                src = cand / f
                tmp = raw / f"{f}.tmp"
                if src.exists():
                    shutil.copyfile(src, tmp)
                else:
                    with gzip.open(cand / f"{f}.gz", "rb") as fin, open(tmp, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                tmp.replace(raw / f)
            return root
        if data_dir:
            raise CnnlabError(
                f"data.data_dir {data_dir!r} does not hold the IDX files {', '.join(_IDX_FILES)} (plain or .gz)"
            )
    if download:
        return root
    raise CnnlabError(
        f"{folder} files not found in {candidates[0]}; install Debian's dataset-fashion-mnist "
        "(sudo apt-get install dataset-fashion-mnist), pass --data-dir DIR with the four IDX files, "
        "or add --download to fetch them with torchvision"
    )


def _load_fashion_mnist(data_dir: Optional[str] = None, download: bool = False, **_: object) -> SourceImages:
    from torchvision.datasets import FashionMNIST

    root = _torchvision_root(data_dir, "FashionMNIST", download)
    try:
        train = FashionMNIST(str(root), train=True, download=download)
        test = FashionMNIST(str(root), train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found. You can use download=True ..."
        raise CnnlabError(f"Fashion-MNIST could not be read from {root}: {e}") from None
    images = np.concatenate([train.data.numpy(), test.data.numpy()])[:, None]
    labels = np.concatenate([train.targets.numpy(), test.targets.numpy()]).astype(np.int64)
    n = len(train.targets)
    return SourceImages(
        images=images, labels=labels, classes=list(FASHION_CLASSES),
        given_splits={"train": np.arange(n), "test": np.arange(n, len(labels))},
        native_size=28, native_channels=1,
    )


def _load_digits(**_: object) -> SourceImages:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return SourceImages(
        images=images, labels=d.target.astype(np.int64), classes=[str(c) for c in d.target_names],
        native_size=8, native_channels=1,
    )


DATASETS.add("fashion-mnist", BuiltinDataset(
    "fashion-mnist", "Zalando Fashion-MNIST, 70,000 28×28 grey images, 10 classes (Debian package or --data-dir)",
    _load_fashion_mnist, 28, 1, 10))
DATASETS.add("digits", BuiltinDataset(
    "digits", "scikit-learn's bundled 8×8 handwritten digits, 1,797 images, 10 classes",
    _load_digits, 8, 1, 10))


# ---------------------------------------------------------------- class-per-folder trees


@dataclass
class FolderScan:
    """The files of a class-per-folder tree, before decoding."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: list[int]
    split_of: list[Optional[str]]
    ignored: int


def scan_folder(root: str | Path) -> FolderScan:
    """List image files of ``root/<class>/...`` or ``root/{train,val,test}/<class>/...``.

    Files with an image extension are candidates (they may still fail to decode); other
    files and hidden entries are ignored and counted.
    """
    root = Path(root)
    if not root.is_dir():
        raise CnnlabError(f"data.source {str(root)!r} is not a directory of class folders")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    presplit = "train" in subdirs and set(subdirs) <= set(SPLIT_NAMES)
    tops = [(root / s, s) for s in SPLIT_NAMES if s in subdirs] if presplit else [(root, None)]
    class_names = sorted({c.name for top, _ in tops for c in top.iterdir()
                          if c.is_dir() and not c.name.startswith(".")})
    if len(class_names) < 2:
        raise CnnlabError(
            f"data.source {str(root)!r} needs at least two class folders (root/<class>/image.png, "
            f"optionally under train/ val/ test/); found {len(class_names)}"
        )
    index = {c: i for i, c in enumerate(class_names)}
    files: list[Path] = []
    labels: list[int] = []
    split_of: list[Optional[str]] = []
    ignored = 0
    for top, split in tops:
        for cls in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for dirpath, dirnames, filenames in os.walk(cls):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    path = Path(dirpath) / name
                    if path.suffix.lower() not in IMAGE_EXTENSIONS:
                        ignored += 1
                        continue
                    files.append(path)
                    labels.append(index[cls.name])
                    split_of.append(split)
    if not files:
        raise CnnlabError(f"data.source {str(root)!r} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return FolderScan(root, class_names, files, labels, split_of, ignored)


def _decode_one(path: Path, channels: int, size: int) -> tuple[Optional[np.ndarray], str]:
    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        arr, mode = decode_file(path, channels, size)
        return arr, mode
    except Exception as e:  # every failure of one file is recorded, never raised
        return None, describe_error(e)


def load_folder(root: str | Path, size: int, channels: Optional[int], workers: int = 2,
                progress: bool = True) -> SourceImages:
    """Decode every image of a class-per-folder tree to (C, size, size) uint8.

    With ``channels=None`` the images are decoded as RGB and reduced to one channel when
    every readable file is greyscale. Unreadable files are skipped, logged and listed.
    """
    from tqdm.auto import tqdm

    scan = scan_folder(root)
    decode_channels = channels or 3

    def work(p: Path) -> tuple[Optional[np.ndarray], str]:
        return _decode_one(p, decode_channels, size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(work, scan.files), total=len(scan.files), desc="decoding images",
                            unit="img", disable=not progress, leave=False))
    keep = [i for i, (arr, _) in enumerate(results) if arr is not None]
    skipped = [{"path": str(scan.files[i]), "reason": results[i][1]}
               for i in range(len(results)) if results[i][0] is None]
    for s in skipped:
        log.warning("skipped unreadable image %s: %s", s["path"], s["reason"])
    if not keep:
        raise CnnlabError(f"data.source {str(root)!r}: none of its {len(scan.files)} image files could be read")
    images = np.stack([results[i][0] for i in keep])
    if channels is None and all(results[i][1] in GREY_MODES for i in keep):
        images = images[:, :1]
    labels = np.asarray([scan.labels[i] for i in keep], dtype=np.int64)
    given: dict[str, np.ndarray] = {}
    splits = [scan.split_of[i] for i in keep]
    for name in SPLIT_NAMES:
        idx = np.asarray([j for j, s in enumerate(splits) if s == name], dtype=np.int64)
        if len(idx):
            given[name] = idx
    if scan.ignored:
        log.info("ignored %d files without an image extension under %s", scan.ignored, root)
    return SourceImages(
        images=images, labels=labels, classes=scan.classes, given_splits=given,
        paths=[str(scan.files[i].relative_to(scan.root)) for i in keep], skipped=skipped,
        native_size=None, native_channels=images.shape[1],
    )
