"""predictions.npz, checked as a file cnnlab did not necessarily write: each array's shape and size read
from its .npy header inside the zip before any of it is decompressed, then its values."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.runs.tables import damaged

__all__ = ["MAX_PREDICTION_BYTES", "check_predictions", "load_predictions", "load_thumbnails", "npz_shapes"]

MAX_PREDICTION_BYTES = 512 << 20  # decompressed: 50,000 images × 1,000 classes in float32 is 200 MB


def load_predictions(path: Path, classes: int | None) -> dict[str, np.ndarray]:
    """predictions.npz at ``path``, read without pickle: the arrays' shapes checked from their headers
    before anything is decompressed (at most ``MAX_PREDICTION_BYTES``), then their values
    (:func:`check_predictions`; ``classes``: the run's class count when known).

    Raises:
        CnnlabError: a missing, damaged or hostile file, in one line.
    """
    try:
        if sum(n for _, n in npz_shapes(path).values()) > MAX_PREDICTION_BYTES:
            raise damaged(path, f"its arrays hold over {MAX_PREDICTION_BYTES >> 20} MB")
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise CnnlabError(f"{path} is missing from the run folder") from None
    except CnnlabError:
        raise
    except Exception as e:  # not a zip, pickled objects, truncated: the file is damaged
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CnnlabError(f"{path} cannot be read ({type(e).__name__}: {first})") from None
    check_predictions(path, out, classes)
    return out


def npz_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """name → (shape, bytes) of each array in the .npz at ``path``, from the headers alone."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            with z.open(info) as f:
                fmt = np.lib.format
                header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = header(f)
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            out[info.filename.removesuffix(".npy")] = (tuple(shape), size)
    return out


def check_predictions(path: Path, arrays: dict[str, Any], classes: int | None) -> None:
    """probs (N, K) finite in [0, 1], labels (N,) in [0, K) or (N, K) of 0/1, indices (N,) ≥ 0; K the
    run's class count when known.

    Raises:
        CnnlabError: naming the first array that is not so.
    """
    if not {"probs", "labels", "indices"} <= set(arrays):
        raise damaged(path, "it needs probs, labels and indices")
    probs, labels, indices = arrays["probs"], arrays["labels"], arrays["indices"]
    if probs.ndim != 2 or indices.ndim != 1 or len(probs) != len(indices) or len(labels) != len(probs):
        raise damaged(path, f"probs {probs.shape}, labels {labels.shape} and indices {indices.shape} do not fit")
    k = probs.shape[1]
    if classes is not None and k != classes:
        raise damaged(path, f"its probabilities have {k} classes, the run {classes}")
    if (
        not np.issubdtype(probs.dtype, np.floating)
        or not np.isfinite(probs).all()
        or probs.min(initial=0) < 0
        or probs.max(initial=0) > 1
    ):
        raise damaged(path, "its probabilities are not finite numbers between 0 and 1")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise damaged(path, "its labels are not whole numbers")
    if (labels.ndim == 1 and len(labels) and (labels.min() < 0 or labels.max() >= k)) or (
        labels.ndim == 2 and (labels.shape[1] != k or not np.isin(labels, (0, 1)).all())
    ):
        raise damaged(path, f"its labels are not classes 0 to {k - 1}")
    if not np.issubdtype(indices.dtype, np.integer) or (len(indices) and indices.min() < 0):
        raise damaged(path, "its image indices are not whole numbers from 0")


MAX_THUMBNAIL_BYTES = 64 << 20  # agreement.npz: the thumbnails of a few hundred images


def load_thumbnails(path: Path, classes: int) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """A study's agreement.npz (image index → thumbnail, → label), checked as predictions.npz is: sizes
    from the headers first (at most ``MAX_THUMBNAIL_BYTES``), then ``index`` (N,) ≥ 0, ``images``
    (N, …) of uint8 pixels, ``labels`` (N,) in [0, ``classes``).

    Raises:
        CnnlabError: a damaged or hostile file, in one line (its page then shows no thumbnails).
    """
    try:
        shapes = npz_shapes(path)
        if sum(n for _, n in shapes.values()) > MAX_THUMBNAIL_BYTES:
            raise damaged(path, f"its arrays hold over {MAX_THUMBNAIL_BYTES >> 20} MB")
        with np.load(path, allow_pickle=False) as f:
            index, images, labels = f["index"], f["images"], f["labels"]
    except CnnlabError:
        raise
    except Exception as e:  # not a zip, a missing array, pickled objects, truncated
        raise CnnlabError(f"{path} cannot be read ({type(e).__name__})") from None
    n = len(index) if index.ndim == 1 else -1
    if n < 0 or images.shape[:1] != (n,) or labels.shape != (n,) or images.dtype != np.uint8:
        raise damaged(path, "its index, images and labels do not match (N,), (N, …) uint8 and (N,)")
    if images.ndim not in (3, 4) or not np.issubdtype(index.dtype, np.integer) or (index < 0).any():
        raise damaged(path, "its images are not (N, H, W[, C]) pixels, or an index is not a whole number ≥ 0")
    if not np.issubdtype(labels.dtype, np.integer) or ((labels < 0) | (labels >= classes)).any():
        raise damaged(path, f"a label is not a class (0 to {classes - 1})")
    return dict(zip(index.tolist(), images)), dict(zip(index.tolist(), labels.tolist()))
