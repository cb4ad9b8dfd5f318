"""Where images come from: built-in benchmark datasets by name, folders and CSV label files."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.core.registry import Registry
from cnnlab.data.cache import cache_dir, decode_images
from cnnlab.data.files import FileList
from cnnlab.data.split import given_splits

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class SourceImages:
    """Images of one dataset before splitting.

    Attributes:
        images: (N, C, H, W) uint8 array or tensor, or a FileStore (``--cache none``).
        labels: (N,) int64 class indices, or (N, K) uint8 multi-hot.
        classes: class names, index order.
        given_splits: splits the source defines itself (e.g. ``{"train": idx, "test": idx}``).
        paths: one path per image for file-based sources, else None.
        skipped: ``{"path", "reason"}`` for every file that could not be read.
        cache: where decoded pixels live (memory, disk, none) for file sources.
        digests: content digest per image file (file sources), part of the data fingerprint.
        pixel_sums: (N, C, 2) per-image channel sums and sums of squares, when decoding took them.
        groups: a CSV's group column per image (see ``data.split.image_groups``), or None.
    """

    images: Any
    labels: np.ndarray
    classes: list[str]
    given_splits: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[str] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    cache: str = "memory"
    digests: list[str] | None = None
    pixel_sums: np.ndarray | None = None
    groups: list[str] | None = None

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset known by name; ``loader(data_dir, download)`` returns SourceImages."""

    name: str
    description: str
    loader: Callable[..., SourceImages]
    native_size: int
    native_channels: int
    num_classes: int


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def _where(
    name: str,
    data_dir: str | None,
    candidates: list[Path],
    present: Callable[[Path], bool],
    download: Callable[[Path], Path] | None,
    hint: str,
) -> Path:
    """First folder holding the dataset's files: ``data_dir`` alone when given, else the
    candidates, else a torchvision download into the cache when allowed."""
    if data_dir:
        if present(Path(data_dir)):
            return Path(data_dir)
        raise CnnlabError(f"data.data_dir {data_dir!r} does not hold {name}'s files ({hint})")
    for cand in candidates:
        if present(cand):
            return cand
    if download is not None:
        return download(cache_dir() / "torchvision")
    raise CnnlabError(
        f"{name} files not found (looked in {', '.join(str(c) for c in candidates)}); pass --data-dir DIR "
        f"holding {hint}, or add --download to fetch them with torchvision"
    )


# ------------------------------------------------------------------ IDX (MNIST family)


def _idx_path(folder: Path, name: str) -> Path | None:
    for p in (folder / name, folder / f"{name}.gz"):
        if p.is_file():
            return p
    return None


# IDX type codes → NumPy dtypes (big-endian), http://yann.lecun.com/exdb/mnist/ "THE IDX FILE FORMAT"
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or .gz) → numpy. Parsed here (a 4-byte magic, big-endian int32 sizes, the
    values): torchvision's reader would cost 1.7 s of imports in every command that loads it."""
    if path.suffix == ".gz":  # decompressed once into the cache, then memory-mapped
        st = path.stat()
        plain = cache_dir() / "idx" / f"{path.stem}-{st.st_size}-{st.st_mtime_ns}"
        if not plain.is_file():
            plain.parent.mkdir(parents=True, exist_ok=True)
            # a temp file of its own: two sweep workers on a cold cache decompress the same file at
            # once, and a shared name let one truncate and rename the other's half-written copy
            fd, name = tempfile.mkstemp(prefix=f".{plain.name}.", suffix=".tmp", dir=plain.parent)
            tmp = Path(name)
            try:
                with os.fdopen(fd, "wb") as fout, gzip.open(path, "rb") as fin:
                    shutil.copyfileobj(fin, fout)
            except (OSError, EOFError) as e:
                tmp.unlink(missing_ok=True)
                raise CnnlabError(f"{path}: not a readable gzip file ({e}); download it again") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            tmp.replace(plain)  # the same bytes whoever renames last
        source, path = path, plain
    else:
        source = path
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        ndim = head[3] if len(head) == 4 else 0
        dims = np.frombuffer(f.read(4 * ndim), dtype=">i4") if ndim else np.zeros(0, ">i4")
    dtype = _IDX_TYPES.get(head[2]) if len(head) == 4 and head[:2] == b"\0\0" else None
    if dtype is None or not ndim or len(dims) != ndim or (dims < 0).any():
        raise CnnlabError(f"{source} is not an IDX file (bad header); download it again")
    offset = 4 + 4 * ndim
    if size - offset != int(np.prod(dims.astype(np.int64))) * dtype.itemsize:
        raise CnnlabError(
            f"{source}: its header says {tuple(int(d) for d in dims)} values but the file holds "
            f"{size - offset} bytes (truncated?); download it again"
        )
    return np.array(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(int(d) for d in dims)))


def _idx_dataset(
    name: str,
    prefix: str,
    classes: list[str],
    tv_class: str,
    candidates: list[Path],
    transpose: bool = False,
    label_offset: int = 0,
    tv_kwargs: dict | None = None,
):
    names = [
        f"{prefix}train-images-idx3-ubyte",
        f"{prefix}train-labels-idx1-ubyte",
        f"{prefix}test-images-idx3-ubyte" if prefix else "t10k-images-idx3-ubyte",
        f"{prefix}test-labels-idx1-ubyte" if prefix else "t10k-labels-idx1-ubyte",
    ]

    def present(folder: Path) -> bool:
        return all(_idx_path(folder, n) for n in names)

    def fetch(root: Path) -> Path:
        import torchvision.datasets as tvd

        for train in (True, False):
            getattr(tvd, tv_class)(str(root), train=train, download=True, **(tv_kwargs or {}))
        return root / tv_class / "raw"

    def load(data_dir: str | None = None, download: bool = False) -> SourceImages:
        cands = candidates + [cache_dir() / "torchvision" / tv_class / "raw"]
        if data_dir:
            cands = [Path(data_dir), Path(data_dir) / tv_class / "raw"]
            data_dir = next((str(c) for c in cands if present(c)), data_dir)
        folder = _where(
            name,
            data_dir,
            cands,
            present,
            fetch if download else None,
            "the four IDX files " + ", ".join(names) + " (plain or .gz)",
        )
        tr_x, tr_y, te_x, te_y = (_read_idx(_idx_path(folder, n)) for n in names)
        images = np.concatenate([tr_x, te_x])
        if transpose:  # EMNIST's files store images transposed
            images = images.transpose(0, 2, 1)
        labels = np.concatenate([tr_y, te_y]).astype(np.int64) - label_offset
        n = len(tr_y)
        return SourceImages(
            np.ascontiguousarray(images[:, None]),
            labels,
            list(classes),
            {"train": np.arange(n), "test": np.arange(n, len(labels))},
        )

    return load


FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]

DATASETS.add(
    "fashion-mnist",
    BuiltinDataset(
        "fashion-mnist",
        "Zalando Fashion-MNIST, 70,000 28×28 grey images, 10 classes (Debian package or --data-dir)",
        _idx_dataset("fashion-mnist", "", FASHION_CLASSES, "FashionMNIST", [DEBIAN_FASHION_MNIST]),
        28,
        1,
        10,
    ),
)
DATASETS.add(
    "mnist",
    BuiltinDataset(
        "mnist",
        "MNIST handwritten digits, 70,000 28×28 grey images, 10 classes (IDX files, --data-dir)",
        _idx_dataset("mnist", "", DIGIT_CLASSES, "MNIST", []),
        28,
        1,
        10,
    ),
)


def _emnist_classes(split: str) -> list[str]:
    """EMNIST's class names per split, as torchvision names them (``EMNIST.classes_split_dict``;
    written out so that listing datasets does not import torchvision)."""
    import string

    every = set(string.digits + string.ascii_letters)
    merged = set("cijklmopsuvwxyz")  # upper/lower case letters EMNIST merges into one class
    return {
        "byclass": sorted(every),
        "bymerge": sorted(every - merged),
        "balanced": sorted(every - merged),
        "letters": ["N/A"] + list(string.ascii_lowercase),
        "digits": list(string.digits),
        "mnist": list(string.digits),
    }[split]


for _split, _k in (("balanced", 47), ("byclass", 62), ("bymerge", 47), ("digits", 10), ("letters", 26), ("mnist", 10)):
    _classes = _emnist_classes(_split)
    _offset = 1 if _split == "letters" else 0  # EMNIST letters are labelled 1..26
    if _split == "letters":
        _classes = _classes[1:]  # drop torchvision's 'N/A' placeholder for label 0
    DATASETS.add(
        f"emnist-{_split}",
        BuiltinDataset(
            f"emnist-{_split}",
            f"EMNIST {_split}, 28×28 grey, {_k} classes (IDX files emnist-{_split}-*, --data-dir)",
            _idx_dataset(
                f"emnist-{_split}",
                f"emnist-{_split}-",
                _classes,
                "EMNIST",
                [],
                transpose=True,
                label_offset=_offset,
                tv_kwargs={"split": _split},
            ),
            28,
            1,
            _k,
        ),
    )


# ------------------------------------------------------------------ CIFAR pickles


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only plain data: dicts, lists, str, bytes, numbers, and NumPy arrays rebuilt from
    their raw bytes. Any other global (os.system, builtins.eval...) is refused, so a crafted
    batch file cannot run code. Written by hand: the standard library has no such loader."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a dataset file may hold plain data only")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR "python version" batch file (pickled by its authors) read as plain data only."""
    try:
        with open(path, "rb") as f:
            d = _PlainUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CnnlabError(
            f"{path} is not a CIFAR batch file of plain data ({e}); "
            "use the official files (--download) or re-create them"
        ) from None
    if not isinstance(d, dict):
        raise CnnlabError(f"{path} is not a CIFAR batch file: it holds a {type(d).__name__}, not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar(
    name: str,
    folder: str,
    train_files: list[str],
    test_file: str,
    meta_file: str,
    label_key: str,
    names_key: str,
    tv_class: str,
    k: int,
):
    def present(p: Path) -> bool:
        return all((p / f).is_file() for f in train_files + [test_file])

    def fetch(root: Path) -> Path:
        import torchvision.datasets as tvd

        getattr(tvd, tv_class)(str(root), download=True)
        return root / folder

    def load(data_dir: str | None = None, download: bool = False) -> SourceImages:
        cands = [cache_dir() / "torchvision" / folder]
        if data_dir and not present(Path(data_dir)) and present(Path(data_dir) / folder):
            data_dir = str(Path(data_dir) / folder)
        where = _where(
            name,
            data_dir,
            cands,
            present,
            fetch if download else None,
            f"{folder}/ with {', '.join(train_files + [test_file])}",
        )
        # torchvision's CIFAR classes also verify the official files' MD5 sums, which rules out
        # re-packed copies and test fixtures; reading the pickles is a few lines.
        parts = [_unpickle(where / f) for f in train_files + [test_file]]
        for f, p in zip(train_files + [test_file], parts):
            if "data" not in p or label_key not in p:
                raise CnnlabError(f"{where / f} lacks the 'data' or {label_key!r} entry of a CIFAR batch file")
        try:
            images = np.concatenate([np.asarray(p["data"], np.uint8).reshape(-1, 3, 32, 32) for p in parts])
            labels = np.concatenate([np.asarray(p[label_key], np.int64) for p in parts])
        except (ValueError, TypeError) as e:
            raise CnnlabError(f"{where}: CIFAR batch files with unexpected contents ({e})") from None
        meta = where / meta_file
        classes = list(_unpickle(meta)[names_key]) if meta.is_file() else [str(i) for i in range(k)]
        n = len(labels) - len(parts[-1][label_key])
        return SourceImages(images, labels, classes, {"train": np.arange(n), "test": np.arange(n, len(labels))})

    return load


DATASETS.add(
    "cifar10",
    BuiltinDataset(
        "cifar10",
        "CIFAR-10, 60,000 32×32 colour images, 10 classes (python pickles, --data-dir)",
        _cifar(
            "cifar10",
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
            "batches.meta",
            "labels",
            "label_names",
            "CIFAR10",
            10,
        ),
        32,
        3,
        10,
    ),
)
DATASETS.add(
    "cifar100",
    BuiltinDataset(
        "cifar100",
        "CIFAR-100, 60,000 32×32 colour images, 100 fine classes (python pickles, --data-dir)",
        _cifar(
            "cifar100",
            "cifar-100-python",
            ["train"],
            "test",
            "meta",
            "fine_labels",
            "fine_label_names",
            "CIFAR100",
            100,
        ),
        32,
        3,
        100,
    ),
)


# ------------------------------------------------------------------ SVHN .mat


def _load_svhn(data_dir: str | None = None, download: bool = False) -> SourceImages:
    from scipy.io import loadmat

    names = ["train_32x32.mat", "test_32x32.mat"]

    def present(p: Path) -> bool:
        return all((p / n).is_file() for n in names)

    def fetch(root: Path) -> Path:
        from torchvision.datasets import SVHN

        for split in ("train", "test"):
            SVHN(str(root / "svhn"), split=split, download=True)
        return root / "svhn"

    where = _where(
        "svhn", data_dir, [cache_dir() / "torchvision" / "svhn"], present, fetch if download else None, ", ".join(names)
    )
    xs, ys = [], []
    for n in names:  # torchvision's SVHN also checks MD5 sums; scipy reads the .mat directly
        m = loadmat(str(where / n))
        xs.append(np.ascontiguousarray(np.asarray(m["X"], np.uint8).transpose(3, 2, 0, 1)))
        y = np.asarray(m["y"], np.int64).reshape(-1)
        ys.append(np.where(y == 10, 0, y))  # SVHN labels digit 0 as 10
    n = len(ys[0])
    labels = np.concatenate(ys)
    return SourceImages(
        np.concatenate(xs), labels, DIGIT_CLASSES, {"train": np.arange(n), "test": np.arange(n, len(labels))}
    )


DATASETS.add(
    "svhn",
    BuiltinDataset(
        "svhn",
        "Street View House Numbers, 32×32 colour digits, 10 classes (.mat files, --data-dir)",
        _load_svhn,
        32,
        3,
        10,
    ),
)


def _load_digits(data_dir: str | None = None, download: bool = False) -> SourceImages:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return SourceImages(images, d.target.astype(np.int64), [str(c) for c in d.target_names])


DATASETS.add(
    "digits",
    BuiltinDataset(
        "digits", "scikit-learn's bundled 8×8 handwritten digits, 1,797 images, 10 classes", _load_digits, 8, 1, 10
    ),
)


# ------------------------------------------------------------------ files


_SKIPS_SAID: set[tuple[str, int, tuple[str, ...]]] = set()  # skipped-file summaries already logged


def load_files(
    fl: FileList,
    size: int,
    channels: int | None,
    *,
    max_pixels: int,
    workers: int,
    cache: str,
    progress: bool,
    resample: str = "bilinear",
) -> SourceImages:
    """Decode a FileList once (see cache.py) into SourceImages."""
    dec = decode_images(
        fl.files,
        size,
        channels,
        max_pixels=max_pixels,
        workers=workers,
        mode=cache,
        progress=progress,
        rel=fl.relpath,
        resample=resample,
    )
    skipped = fl.skipped + dec.skipped
    said = (str(fl.root), len(skipped), tuple(x["path"] for x in skipped[:20]))
    if skipped and said not in _SKIPS_SAID:  # one concise line, once per process (a study loads its data
        _SKIPS_SAID.add(said)  # for every candidate); every file with its full reason goes to dataset.json
        kinds = Counter(x["reason"].split(" (")[0].split(":")[0] for x in skipped)
        names = ", ".join(x["path"] for x in skipped[:20]) + (
            f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        )
        log.warning(
            "skipped %d unreadable files (%s): %s; reasons in dataset.json",
            len(skipped),
            ", ".join(f"{n} {k}" for k, n in kinds.most_common()),
            names,
        )
    if fl.ignored:
        log.info("ignored %d files without an image extension under %s", fl.ignored, fl.root)
    keep = dec.keep
    given = given_splits([fl.split_of[i] for i in keep])
    return SourceImages(
        dec.images,
        fl.labels[keep],
        fl.classes,
        given,
        [fl.relpath(fl.files[i]) for i in keep],
        skipped,
        dec.mode,
        dec.digests,
        dec.sums,
        [fl.groups[i] for i in keep] if fl.groups is not None else None,
    )
