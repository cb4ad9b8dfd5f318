"""Decoding one image file of any mode into a uint8 array of the requested channels and size."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float greyscale → 8-bit 'L', scaled by the mode's range."""
    arr = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
    else:
        # I;16* hold 0..65535; 'I' (32-bit) from 16-bit PNGs holds the same range.
        scaled = arr.astype(np.float64) / (65535.0 if arr.max() > 255 else 255.0) * 255
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to 'L' (channels=1) or 'RGB' (channels=3).

    Transparency (RGBA, LA, PA, P with a transparent index) is composited on white, as a
    viewer would show it; 16-bit and float images are scaled to 8 bits.
    """
    if img.mode in {"I", "F"} or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in {"RGBA", "LA", "PA", "La", "RGBa"}:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("L" if channels == 1 else "RGB")


DEFAULT_MAX_PIXELS = 50_000_000


class UnusableFile(OSError):
    """A path that is not a regular file (missing, a folder, a FIFO, a broken link); its message is the reason."""


class TooManyPixels(ValueError):
    """An image larger than the configured pixel budget."""


_limit_lock = threading.Lock()
_limit_users = 0
_limit_saved: int | None = None


@contextlib.contextmanager
def open_image(path: Any) -> Iterator[Image.Image]:
    """``Image.open`` without Pillow's own decompression-bomb guard.

    cnnlab applies its ``max_pixels`` budget itself, from the header, before anything is
    decoded (see :func:`decode_file`). Pillow's fixed guard (89 M pixels warns with a
    traceback-like message, 179 M refuses) would otherwise refuse a 623 M-pixel file the user
    allowed with ``--max-pixels``. Pillow keeps the guard in a module global, so it is lifted
    only while an open in this process is under way (counted across threads) and restored after.
    """
    global _limit_users, _limit_saved
    with _limit_lock:
        if _limit_users == 0:
            _limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _limit_users += 1
    try:
        with Image.open(path) as im:
            yield im
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _limit_saved


def decode_file(
    path: str | Path | BinaryIO,
    channels: int,
    size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resample: str = "bilinear",
) -> tuple[np.ndarray, str]:
    """Read ``path`` → (C, size, size) uint8 array, and the file's original PIL mode.

    EXIF orientation is applied; the image is resized to a square with bilinear filtering
    (or ``resample``: the filter a pretrained model expects; PIL's resize low-pass filters
    when shrinking). Memory stays within ``max_pixels``: the pixel count is read from the
    header before decoding; a larger JPEG is decoded at a reduced scale (libjpeg's draft
    mode, up to 1/8), anything else larger is refused. An image many times the target side is
    box-reduced right after decoding, before mode conversion, so that its copies stay small.

    Raises:
        TooManyPixels: over the budget and not reducible.
        Exception: whatever PIL raises for an unreadable file; callers record the reason.
    """
    with open_image(path) as im:
        mode = im.mode
        w, h = im.size
        if w * h > max_pixels and im.format == "JPEG":
            im.draft("L" if channels == 1 else "RGB", (size, size))
        if im.size[0] * im.size[1] > max_pixels:
            raise TooManyPixels(
                f"{w}×{h} = {w * h:,} pixels is over data.max_pixels = {max_pixels:,}; "
                "raise it (--max-pixels) to decode such images"
            )
        im.load()
        factor = min(im.size) // (2 * size)
        if factor >= 4 and im.mode in ("L", "RGB", "RGBA", "LA", "I", "F"):
            im = im.reduce(factor)  # a large image: box-shrink first, so the copies below stay small
        im = ImageOps.exif_transpose(im)
        im = to_mode(im, channels)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling[resample.upper()])
        arr = np.asarray(im, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), mode


def describe_error(exc: BaseException) -> str:
    """A short reason for an unreadable image, e.g. 'truncated file' or 'not an image'."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, UnusableFile):
        return text
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not a file"
    if "cannot identify image file" in text:
        return "not an image (unrecognised format)"
    if "truncated" in text.lower() or isinstance(exc, (OSError, SyntaxError)) and "image file" in text:
        return f"truncated or corrupt image ({text})"
    if isinstance(exc, TooManyPixels):
        return f"too many pixels: {text}"
    if isinstance(exc, Image.DecompressionBombError) or "decompression bomb" in text.lower():
        return f"too many pixels ({text})"
    return f"{type(exc).__name__}: {text}"
