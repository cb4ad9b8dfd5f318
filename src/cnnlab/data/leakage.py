"""The leakage guard: near-duplicate images (re-encoded, resized, cropped or recoloured copies) found
by perceptual hashes (imagehash's pHash) and confirmed by an alignment-tolerant pixel correlation.

Two stages, each with a stated threshold (:class:`NearDuplicateRule`):

1. **candidates**: the pHash of every image and of a few crops of it (the centre and the corners at
   90 % of the side); a pair is a candidate when one image's hash, or one of its crops' hashes, is
   within ``hash_distance`` bits of the other's. Cropped copies need the crops: a copy cut to 90 %
   moves every low-frequency coefficient of the whole image's hash.
2. **confirmation**: both images as 32 × 32 grey, each standardised (mean 0, norm 1: a brightness,
   contrast or colour shift leaves it unchanged); the highest correlation of one image with crops of
   the other over a grid of scales (88–100 % of the side) and positions, batched in PyTorch. A pair
   is a near duplicate at ``similarity`` or above.

The hashing is imagehash's; the crop search and the correlation are written here (a few lines of
NumPy: no library confirms pHash candidates this way). Measured on 2,000 Fashion-MNIST images with 120
planted copies (`benchmarks/leakage.py`): see the README's "Leaks beyond exact copies".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.core.schema import DataConfig

__all__ = ["Fingerprints", "NearDuplicateRule", "fingerprints", "near_duplicate_pairs", "training_leaks"]

THUMB = 32  # side of the grey thumbnails the confirmation correlates
GREY = 64  # side of the grey copy kept per image
HASH_CROPS = ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))  # where the 90 % crops sit
SEARCH_SCALES = (1.0, 0.96, 0.92, 0.88)
SEARCH_OFFSETS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class NearDuplicateRule:
    """The thresholds of the two stages (the defaults are ``data.leak_hash_bits`` and
    ``data.leak_similarity``'s, chosen on Fashion-MNIST: the README gives the figures).

    Attributes:
        hash_distance: most differing pHash bits (of 64) for a candidate pair.
        similarity: least correlation of the aligned, standardised grey thumbnails to confirm it.
    """

    hash_distance: int = DataConfig.model_fields["leak_hash_bits"].default
    similarity: float = DataConfig.model_fields["leak_similarity"].default


@dataclass
class Fingerprints:
    """Per image: its pHash and its crops' (``hashes``: (N, 1 + crops) uint64, the whole image
    first) and a grey copy (``grey``: (N, GREY, GREY) uint8) the confirmation crops on demand."""

    hashes: np.ndarray
    grey: np.ndarray

    def __len__(self) -> int:
        return len(self.hashes)


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3):  # (C, H, W), as cnnlab stores pixels
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)))


def _crop(im: Image.Image, scale: float, ox: float, oy: float) -> Image.Image:
    w, h = im.size
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    x, y = round((w - cw) * ox), round((h - ch) * oy)
    return im.crop((x, y, x + cw, y + ch))


def _hash64(im: Image.Image) -> int:
    import imagehash

    bits = imagehash.phash(im).hash.ravel()
    return int(np.packbits(bits).view(">u8")[0])


def fingerprints(images: Sequence[Any] | np.ndarray) -> Fingerprints:
    """The hashes and grey copies of images given as (C, H, W) / (H, W[, C]) uint8 arrays or PIL images."""
    hashes, grey = [], []
    for image in images:
        im = _as_pil(image).convert("RGB")
        hashes.append([_hash64(im)] + [_hash64(_crop(im, 0.9, ox, oy)) for ox, oy in HASH_CROPS])
        grey.append(np.asarray(im.convert("L").resize((GREY, GREY), Image.Resampling.BILINEAR)))
    return Fingerprints(
        np.asarray(hashes, np.uint64).reshape(-1, 1 + len(HASH_CROPS)),
        np.asarray(grey, np.uint8).reshape(-1, GREY, GREY),
    )


GRID = [(1.0, 0.0, 0.0)] + [(sc, ox, oy) for sc in SEARCH_SCALES[1:] for ox in SEARCH_OFFSETS for oy in SEARCH_OFFSETS]


def _thumbs(grey: np.ndarray, grid: Sequence[tuple[float, float, float]]) -> Any:
    """(B, len(grid), THUMB²) float32 tensor: each grid crop (scale, x offset, y offset) of the
    (B, GREY, GREY) grey images, resized to THUMB px and standardised (mean 0, norm 1)."""
    x = torch.from_numpy(np.ascontiguousarray(grey)).float()[:, None]
    side = x.shape[-1]
    views = []
    for scale, ox, oy in grid:
        c = max(1, round(side * scale))
        x0, y0 = round((side - c) * ox), round((side - c) * oy)
        crop = x[:, :, y0 : y0 + c, x0 : x0 + c]
        views.append(F.interpolate(crop, size=(THUMB, THUMB), mode="bilinear", antialias=True).flatten(1))
    v = torch.stack(views, 1)
    v = v - v.mean(-1, keepdim=True)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def _similarities(fp: Fingerprints, pairs: Sequence[tuple[int, int]], chunk: int = 128) -> np.ndarray:
    """Per pair (a, b): the best correlation of one image whole with any grid crop of the other,
    either way round. Each image's crops are made once, a chunk of images at a time."""
    if not pairs:
        return np.zeros(0, np.float32)
    ab = np.asarray(pairs, np.int64)
    needed = np.unique(ab)
    whole = _thumbs(fp.grey[needed], GRID[:1])[:, 0]
    best = np.full(len(ab), -1.0, np.float32)
    for side in (0, 1):
        mine, theirs = ab[:, side], ab[:, 1 - side]
        order = np.argsort(mine, kind="stable")
        images, first = np.unique(mine[order], return_index=True)
        bounds = np.append(first, len(order))
        for start in range(0, len(images), chunk):
            crops = _thumbs(fp.grey[images[start : start + chunk]], GRID)
            for k in range(len(crops)):
                rows = order[bounds[start + k] : bounds[start + k + 1]]
                partners = whole[torch.from_numpy(np.searchsorted(needed, theirs[rows]))]
                sims = (crops[k] @ partners.T).amax(0).numpy()  # (grid, partners) → best crop per partner
                best[rows] = np.maximum(best[rows], sims)
    return best


def _candidates(fp: Fingerprints, rows: np.ndarray, cols: np.ndarray, max_bits: int) -> dict[tuple[int, int], int]:
    """Pairs (lower index, higher) whose hashes, with either one's crops, are within ``max_bits``,
    with the fewest differing bits."""
    pairs: dict[tuple[int, int], int] = {}
    block = max(1, 2_000_000 // max(len(cols) * fp.hashes.shape[1], 1))
    for start in range(0, len(rows), block):
        r = rows[start : start + block]
        # a row image's crops against column images whole, and the row image whole against column crops
        d1 = np.bitwise_count(fp.hashes[r][:, :, None] ^ fp.hashes[cols, 0][None, None, :]).min(1)
        d2 = np.bitwise_count(fp.hashes[r, 0][:, None, None] ^ fp.hashes[cols][None, :, :]).min(2)
        d = np.minimum(d1, d2)
        for a, b in zip(*np.nonzero(d <= max_bits)):
            i, j = int(r[a]), int(cols[b])
            if i != j:
                key = (min(i, j), max(i, j))
                pairs[key] = min(pairs.get(key, 64), int(d[a, b]))
    return pairs


def near_duplicate_pairs(
    fp: Fingerprints,
    rule: NearDuplicateRule = NearDuplicateRule(),
    split_of: Sequence[str | None] | None = None,
    across_only: bool = False,
) -> list[dict[str, Any]]:
    """Confirmed near-duplicate pairs ``{"a", "b", "bits", "similarity"}`` (indices into ``fp``),
    highest similarity first. With ``across_only`` (and ``split_of``, a split name per image) only
    pairs in different splits are searched: what leaks, at a fraction of the cost of all pairs."""
    everyone = np.arange(len(fp))
    found: dict[tuple[int, int], int] = {}
    if across_only and split_of is not None:
        names = np.asarray([s or "" for s in split_of], dtype=object)
        for s in sorted(set(names) - {""}):
            rows, cols = np.flatnonzero(names == s), np.flatnonzero((names != s) & (names != ""))
            found.update(_candidates(fp, rows, cols, rule.hash_distance))
    else:
        found = _candidates(fp, everyone, everyone, rule.hash_distance)
    keys = list(found)
    sims = _similarities(fp, keys)
    out = [
        {"a": a, "b": b, "bits": found[(a, b)], "similarity": round(float(sim), 4)}
        for (a, b), sim in zip(keys, sims)
        if sim >= rule.similarity
    ]
    return sorted(out, key=lambda p: -p["similarity"])


def _pixels(images: Any, idx: np.ndarray, side: int = GREY, batch: int = 512) -> list[np.ndarray]:
    """The images at ``idx`` of a (N, C, H, W) uint8 store, area-downscaled to ``side`` when larger
    (hashing and confirming work at 32–64 px; a 224-px copy only costs time)."""
    out: list[np.ndarray] = []
    for start in range(0, len(idx), batch):
        x = torch.as_tensor(images[torch.as_tensor(idx[start : start + batch])])
        if x.shape[-1] > side:
            x = torch.nn.functional.interpolate(x.float(), size=(side, side), mode="area").round().byte()
        out.extend(x.numpy())
    return out


_KEPT: dict[Any, Fingerprints] = {}  # per process, the last data's: a CV's folds and a sweep's trials share it


def _fingerprints_of(images: Any, key: Any) -> Fingerprints:
    """Every image's fingerprints, computed once per process for the data ``key`` names."""
    if key is not None and key in _KEPT:
        return _KEPT[key]
    fp = fingerprints(_pixels(images, np.arange(len(images))))
    if key is not None:
        _KEPT.clear()
        _KEPT[key] = fp
    return fp


def training_leaks(
    images: Any, splits: dict[str, np.ndarray], rule: NearDuplicateRule, key: Any = None
) -> list[dict[str, Any]]:
    """Validation and test images that are exact or near copies of training images:
    ``{"split", "index", "train_index", "similarity", "bits"}`` (dataset indices), one entry per
    evaluation image (its most similar training image). ``key`` (the data's identity) lets one
    process hash the images once for every split it is asked about."""
    order = {"train": 0, "val": 1, "test": 2}
    parts = [(name, np.asarray(splits.get(name, []), np.int64)) for name in order]
    idx = np.concatenate([p for _, p in parts])
    names = [name for name, p in parts for _ in range(len(p))]
    if not len(parts[0][1]) or len(idx) == len(parts[0][1]):
        return []
    every = _fingerprints_of(images, key)
    fp = Fingerprints(every.hashes[idx], every.grey[idx])
    n_train = len(parts[0][1])
    rows, cols = np.arange(n_train), np.arange(n_train, len(idx))
    best: dict[int, dict[str, Any]] = {}
    found = _candidates(fp, rows, cols, rule.hash_distance)
    for ((a, b), bits), sim in zip(found.items(), _similarities(fp, list(found))):
        sim = round(float(sim), 4)  # a < b: a is the training image
        if sim >= rule.similarity and (b not in best or sim > best[b]["similarity"]):
            best[b] = {
                "split": names[b],
                "index": int(idx[b]),
                "train_index": int(idx[a]),
                "similarity": sim,
                "bits": bits,
            }
    return sorted(best.values(), key=lambda e: (order[e["split"]], e["index"]))
