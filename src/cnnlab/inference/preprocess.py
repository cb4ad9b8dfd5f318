"""How a model's input images were prepared in training, and so must be at inference: decoding
and normalisation as a typed value. NumPy and Pillow only (no PyTorch), so that an exported model
can be used, and its preprocessing checked, in a process without torch."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union, cast

import numpy as np
from PIL import Image

from cnnlab.data.files import usable
from cnnlab.data.images import DecodeMemory, UnusableFile, decode_file, describe_error, to_mode

ImageInput = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]
NORMALIZATIONS = ("mean-std", "per-image", "none")  # what a trained model's preprocessing resolves to
MAX_INPUT_SIZE = 4096  # px a side: larger is no model cnnlab trains, and a batch of it would not fit


def _whole(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or not lo <= value <= hi:
        raise ValueError(f"{name} is {value!r}; it must be a whole number from {lo:,} to {hi:,}")
    return int(value)


@dataclass(frozen=True)
class Preprocess:
    """Decode any image to (C, S, S) uint8 like the training images were, then normalise."""

    input_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalize: str
    interpolation: str
    max_pixels: int

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> Preprocess:
        p = ckpt["preprocess"]
        return cls(
            int(p["input_size"]),
            int(p["channels"]),
            tuple(p["mean"]),
            tuple(p["std"]),
            p["normalize"],
            p.get("interpolation", "bilinear"),
            int(ckpt["config"]["data"]["max_pixels"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """From a file's metadata (an exported model's): every field checked against what cnnlab
        itself writes, since the file may come from anyone.

        Raises:
            ValueError: a field out of range, naming it.
        """
        pre = cls(
            _whole(d["input_size"], "input_size", 1, MAX_INPUT_SIZE),
            _whole(d["channels"], "channels", 1, 3),
            tuple(float(v) for v in d["mean"]),
            tuple(float(v) for v in d["std"]),
            str(d["normalize"]),
            str(d.get("interpolation", "bilinear")),
            _whole(d["max_pixels"], "max_pixels", 1, 10**12),
        )
        if pre.channels not in (1, 3):
            raise ValueError(f"channels is {pre.channels}; cnnlab models take 1 or 3")
        if pre.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize is {pre.normalize!r}, not one of {', '.join(NORMALIZATIONS)}")
        if pre.interpolation.upper() not in Image.Resampling.__members__:
            raise ValueError(f"interpolation {pre.interpolation!r} is not a Pillow resampling filter")
        for name, values in (("mean", pre.mean), ("std", pre.std)):
            if len(values) != pre.channels or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be {pre.channels} finite numbers, got {list(values)}")
        if any(v <= 0 for v in pre.std):
            raise ValueError(f"std must be positive, got {list(pre.std)}")
        return pre

    def decode(self, image: ImageInput, memory: DecodeMemory | None = None) -> np.ndarray:
        """One image → (C, S, S) uint8, exactly as the training images were decoded (a file's or
        bytes' decode holding its memory in ``memory`` when given).

        Raises:
            Exception: what decoding raises for an unreadable input; callers report it per item.
        """
        if isinstance(image, (str, Path)):
            reason = usable(Path(image))
            if reason:
                raise UnusableFile(reason)
            return decode_file(image, self.channels, self.input_size, self.max_pixels, self.interpolation, memory)[0]
        if isinstance(image, (bytes, bytearray)):
            return decode_file(
                io.BytesIO(bytes(image)), self.channels, self.input_size, self.max_pixels, self.interpolation, memory
            )[0]
        if isinstance(image, np.ndarray):
            if (
                image.ndim == 3
                and image.shape[0] == self.channels
                and image.shape[1:] == (self.input_size,) * 2
                and image.dtype == np.uint8
            ):
                return np.ascontiguousarray(image)  # already decoded
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            img = to_mode(image, self.channels)
            if img.size != (self.input_size, self.input_size):
                img = img.resize((self.input_size, self.input_size), Image.Resampling[self.interpolation.upper()])
            arr = np.asarray(img, dtype=np.uint8)
            return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        raise TypeError(f"cannot predict from a {type(image).__name__}")

    def normalize_array(self, x: np.ndarray) -> np.ndarray:
        """uint8 (B, C, S, S) → the float32 batch the model was trained on; the same float32
        operations in the same order as the training loader's, so the results are equal."""
        out = x.astype(np.float32)
        if self.normalize == "mean-std":
            std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
            scale = np.float32(1.0) / (np.float32(255.0) * std)
            shift = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1) / std
            return out * scale - shift
        out /= np.float32(255.0)
        if self.normalize == "per-image":
            n = out[0].size
            mean = out.mean(axis=(1, 2, 3), keepdims=True, dtype=np.float32)
            std = np.maximum(out.std(axis=(1, 2, 3), keepdims=True, dtype=np.float32), np.float32(1.0 / n**0.5))
            return (out - mean) / std
        return out


def input_name(item: Any, i: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} #{i}>"


def decode_many(
    pre: Preprocess, inputs: Sequence[ImageInput], threads: int | None = None
) -> list[tuple[str, np.ndarray | None, str | None]]:
    """(name, array or None, reason or None) per input, decoded on threads (Pillow releases the
    GIL while decoding); one bad input does not stop the others."""

    def one(pair: tuple[int, Any]) -> tuple[str, np.ndarray | None, str | None]:
        i, item = pair
        try:
            return input_name(item, i), pre.decode(item), None
        except Exception as e:  # reported per input
            return input_name(item, i), None, describe_error(e)

    pairs = list(enumerate(inputs))
    if len(pairs) < 4:
        return [one(p) for p in pairs]
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, pairs))


def rank(
    probs: np.ndarray, classes: Sequence[str], multilabel: bool, thresholds: Sequence[float] | None, top_k: int
) -> list[dict[str, Any]]:
    """Per row of ``probs``: ``{"top": [{"class", "prob"}...]}`` (k best, ties in class order), and
    for multi-label models ``labels``: the classes over their thresholds (0.5 where none were tuned)."""
    k = max(1, min(top_k, len(classes)))
    cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(classes))
    out = []
    for row in probs:
        top = np.argsort(-row, kind="stable")[:k]
        r: dict[str, Any] = {"top": [{"class": classes[j], "prob": float(row[j])} for j in top]}
        if multilabel:
            r["labels"] = [c for c, p, t in zip(classes, row, cut) if p >= t]
        out.append(r)
    return out


def predict_with(
    pre: Preprocess,
    probs_of: Callable[[np.ndarray], np.ndarray],
    inputs: Sequence[ImageInput],
    classes: Sequence[str],
    multilabel: bool,
    thresholds: Sequence[float] | None,
    top_k: int,
) -> list[dict[str, Any]]:
    """Decode ``inputs``, score the readable ones with ``probs_of`` (uint8 (N, C, S, S) → (N, K)),
    rank them: one result per input, ``{"path", "top"...}`` or ``{"path", "error"}``."""
    decoded = decode_many(pre, inputs)
    results: list[dict[str, Any]] = [{"path": n, "error": r} if a is None else {"path": n} for n, a, r in decoded]
    ok = [i for i, (_, a, _) in enumerate(decoded) if a is not None]
    if ok:
        probs = probs_of(np.stack([cast(np.ndarray, decoded[i][1]) for i in ok]))  # ok: decoded
        for i, r in zip(ok, rank(probs, classes, multilabel, thresholds, top_k)):
            results[i].update(r)
    return results
