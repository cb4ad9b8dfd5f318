"""The one bounded decoder: an image file of an accepted format and any mode → a uint8 array of the
requested channels and size, with the pixel budget checked from the header before anything is
decoded and the memory a decode may take held against an optional shared budget (the service's)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# the formats cnnlab decodes, and no other (Pillow would also open ICO, whose PNG it decodes while
# opening, EPS through Ghostscript, PSD, FITS …); Pillow's JPEG opener also opens multi-picture
# JPEGs (format "MPO")
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
ROWS = 256  # rows converted at a time from 16/32-bit to 8-bit: the temporaries stay small


class FormatRefused(ValueError):
    """An image file of a format cnnlab does not decode; its message names the format."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float greyscale → 8-bit 'L', scaled by the mode's range, a band
    of rows at a time (a float64 copy of a 4000² image would be 128 MB)."""
    arr = np.asarray(img)
    out = np.empty(arr.shape, np.uint8)
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        scale, lo = (255.0 / (hi - lo) if hi > lo else 0.0), lo
    else:
        # I;16* hold 0..65535; 'I' (32-bit) from 16-bit PNGs holds the same range.
        scale, lo = 255.0 / (65535.0 if arr.max() > 255 else 255.0), 0.0
    for r in range(0, arr.shape[0], ROWS):
        band = (arr[r : r + ROWS].astype(np.float32) - np.float32(lo)) * np.float32(scale)
        out[r : r + ROWS] = np.clip(np.rint(band), 0, 255)
    return Image.fromarray(out, "L")


def sniff_format(head: bytes) -> str | None:
    """The format Pillow would take ``head`` (a file's first bytes) for, by its plugins' own
    signature checks, or None."""
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(head):
                return name
        except Exception:  # a plugin's check that trips on short input is no match
            continue
    return None


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


def _format_of(path: Any) -> str | None:
    try:
        if hasattr(path, "read"):
            path.seek(0)
            head = path.read(64)
            path.seek(0)
        else:
            with open(path, "rb") as f:
                head = f.read(64)
    except (OSError, ValueError):
        return None
    return sniff_format(head)


@contextlib.contextmanager
def open_image(path: Any) -> Iterator[Image.Image]:
    """``Image.open`` of the accepted :data:`FORMATS` only (one of them opened reads its header, no
    pixels), without Pillow's own decompression-bomb guard.

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
        try:
            Image.init()  # every plugin registered: formats= names them
            im = Image.open(path, formats=FORMATS)
        except Image.UnidentifiedImageError:
            fmt = _format_of(path)
            if fmt and fmt not in FORMATS:
                raise FormatRefused(
                    f"{fmt} images are not decoded (accepted: PNG, JPEG, BMP, GIF, WebP, TIFF)"
                ) from None
            raise
        with im:
            yield im
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _limit_saved


STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # others: 4 per pixel


def decode_cost(width: int, height: int, mode: str, size: int) -> int:
    """Bytes a decode of a ``width`` × ``height`` image of ``mode`` to ``size`` may hold at once
    (measured: see tests/data/test_decode_memory.py). An image at least 8× the target side is
    shrunk right after decoding, so it costs about its decoded pixels; a smaller one goes through
    its conversions at full size: NumPy's copy for a 16/32-bit one, the RGBA a palette or
    transparent one is composited through."""
    stored = STORED_BYTES.get(mode, 4)
    if min(width, height) // (2 * size) >= 4:
        return width * height * (stored + 1)
    return width * height * (3 * stored + 6)


class DecodeMemory:
    """Bytes shared by concurrent decodes (a service's): each decode holds its
    :func:`decode_cost` while it runs; one that alone needs more than the whole budget is refused
    (:class:`TooManyPixels`), the others wait their turn. Written by hand: a counting semaphore
    whose units are bytes."""

    def __init__(self, limit_bytes: int):
        self.limit, self.used = int(limit_bytes), 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        if nbytes > self.limit:
            raise TooManyPixels(
                f"decoding it takes about {nbytes / 2**20:.0f} MB, over the {self.limit / 2**20:.0f} MB decodes may use"
            )
        with self._cond:
            while self.used + nbytes > self.limit:
                self._cond.wait()
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def decode_file(
    path: str | Path | BinaryIO,
    channels: int,
    size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resample: str = "bilinear",
    memory: DecodeMemory | None = None,
) -> tuple[np.ndarray, str]:
    """Read ``path`` → (C, size, size) uint8 array, and the file's original PIL mode.

    EXIF orientation is applied; the image is resized to a square with bilinear filtering
    (or ``resample``: the filter a pretrained model expects; PIL's resize low-pass filters
    when shrinking). Memory stays within ``max_pixels``: the pixel count is read from the
    header before decoding; a larger JPEG is decoded at a reduced scale (libjpeg's draft
    mode, up to 1/8), anything else larger is refused. An image many times the target side is
    box-reduced right after decoding (a palette or 16-bit one first brought to 8 bits, which Pillow
    can reduce), before the other conversions, so that its copies stay small. With ``memory``, the
    decode holds its :func:`decode_cost` there while it runs.

    Raises:
        TooManyPixels: over the budget and not reducible, or over ``memory`` on its own.
        FormatRefused: a format outside :data:`FORMATS`.
        Exception: whatever PIL raises for an unreadable file; callers record the reason.
    """
    with open_image(path) as im:
        mode = im.mode
        w, h = im.size
        if w * h > max_pixels and im.format in ("JPEG", "MPO"):
            im.draft("L" if channels == 1 else "RGB", (size, size))
        if im.size[0] * im.size[1] > max_pixels:
            raise TooManyPixels(
                f"{w}×{h} = {w * h:,} pixels is over data.max_pixels = {max_pixels:,}; "
                "raise it (--max-pixels) to decode such images"
            )
        held = memory.hold(decode_cost(*im.size, im.mode, size)) if memory is not None else contextlib.nullcontext()
        with held:
            arr = _decoded(im, channels, size, resample)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), mode


def _decoded(im: Image.Image, channels: int, size: int, resample: str) -> np.ndarray:
    im.load()
    factor = min(im.size) // (2 * size)
    if factor >= 4:  # a large image: box-shrink first, so the copies below stay small
        if im.mode == "P" or im.mode.startswith("I;16"):
            # Pillow cannot box-reduce these: keep every k-th pixel first (in their own mode, no
            # copy at full size), then box-reduce what is left by at least 4
            k = factor // 4
            if k > 1:
                im = im.resize((im.width // k, im.height // k), Image.Resampling.NEAREST)
                factor = min(im.size) // (2 * size)
            im = im.convert("RGBA" if "transparency" in im.info else "RGB") if im.mode == "P" else _to_8bit(im)
        if im.mode in ("L", "RGB", "RGBA", "LA", "I", "F"):
            im = im.reduce(factor)
    im = ImageOps.exif_transpose(im)
    im = to_mode(im, channels)
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling[resample.upper()])
    return np.asarray(im, dtype=np.uint8)


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
    if isinstance(exc, FormatRefused):
        return text
    if isinstance(exc, Image.DecompressionBombError) or "decompression bomb" in text.lower():
        return f"too many pixels ({text})"
    return f"{type(exc).__name__}: {text}"
