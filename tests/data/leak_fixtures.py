"""Planted near-copies for the leakage guard's tests and benchmark (not a test module)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

KINDS = ("jpeg", "resize", "crop", "colour")


def distinct_images(images: np.ndarray, n: int, size: int = 112) -> list[Image.Image]:
    """The first ``n`` of (N, 1, H, W) uint8 images, upscaled to ``size`` px RGB."""
    return [Image.fromarray(a[0]).convert("RGB").resize((size, size), Image.BICUBIC) for a in images[:n]]


def planted_copy(im: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A copy of ``im`` re-encoded (JPEG q 60), resized (±20 %), cropped (≤ 10 % off a side's
    length) or colour-shifted (a gain of 0.8–1.2 and an offset of ±20 per channel)."""
    w = im.size[0]
    if kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=60)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "resize":
        side = int(w * rng.uniform(0.8, 1.2))
        return im.resize((side, side), Image.BILINEAR)
    if kind == "crop":
        side = int(w * rng.uniform(0.9, 1.0))
        x, y = rng.integers(0, w - side + 1, 2)
        return im.crop((int(x), int(y), int(x) + side, int(y) + side))
    arr = np.asarray(im, float) * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20, 3)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
