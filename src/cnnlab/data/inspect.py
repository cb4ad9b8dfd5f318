"""`cnnlab data inspect`: counts, imbalance, formats, unreadable files, duplicates and leakage, previews."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from cnnlab.core.results import DataReport
from cnnlab.core.schema import DataConfig
from cnnlab.data.cache import decode_one
from cnnlab.data.files import FileList, list_files
from cnnlab.data.images import open_image
from cnnlab.data.leakage import NearDuplicateRule, fingerprints, near_duplicate_pairs
from cnnlab.data.sources import DATASETS
from cnnlab.data.split import given_splits, image_groups, imbalance_ratio, make_splits
from cnnlab.data.transforms import build_transform

log = logging.getLogger(__name__)

PREVIEW_SIZE = 64
ALL_PAIRS_UP_TO = 20_000  # above this many images, near duplicates are searched across splits only
FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "WEBP": {".webp"},
    "TIFF": {".tif", ".tiff"},
}


def _probe(path: Path, max_pixels: int) -> dict[str, Any]:
    """Header facts, a full decode check (as training would do it) and the content hash."""
    info: dict[str, Any] = {}
    try:
        with open_image(path) as im:
            info.update(format=im.format, mode=im.mode, size=f"{im.size[0]}x{im.size[1]}")
    except Exception:  # reported through the decode check below
        pass
    arr, reason, digest = decode_one(path, 3, PREVIEW_SIZE, max_pixels)
    info["ok"] = arr is not None
    if arr is None:
        info["reason"] = reason
    else:
        info["preview"] = arr
        info["digest"] = digest  # the content digest decoding computed (BLAKE2b)
    return info


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def _grid(rows: list[tuple[str, list[np.ndarray]]], path: Path, cell: int = PREVIEW_SIZE) -> None:
    """A PNG with one labelled row of (3, cell, cell) uint8 images per entry."""
    label_w = 140
    cols = max((len(imgs) for _, imgs in rows), default=1)
    canvas = Image.new("RGB", (label_w + cols * (cell + 4), len(rows) * (cell + 4) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, imgs) in enumerate(rows):
        y = 4 + r * (cell + 4)
        draw.text((4, y + cell // 2 - 6), label[:22], fill="black")
        for c, img in enumerate(imgs):
            tile = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))
            if tile.size != (cell, cell):  # a small benchmark's 8 or 28 px images, blown up to be seen
                tile = tile.resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_w + c * (cell + 4), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def inspect_dataset(
    cfg: DataConfig,
    seed: int = 0,
    out: str | Path | None = None,
    preview_augment: str = "keras",
    per_class: int = 8,
    progress: bool = True,
    near_duplicates: str = "auto",
) -> DataReport:
    """Everything worth knowing about a dataset before training on it.

    Args:
        cfg: the data config (source, CSV options, split, pixel budget).
        seed: the seed a training run would split with.
        out: folder for samples.png and augment.png (not written when None).
        preview_augment: augmentation preset shown in augment.png.
        per_class: images per class in the sample grid.
        progress: show a progress bar.
        near_duplicates: search re-encoded, resized, cropped or recoloured copies too: ``on``,
            ``off`` or ``auto`` (on for files, off for the built-in benchmarks, whose 70,000 images
            take about a minute to hash), with the thresholds ``cfg.leak_hash_bits`` and
            ``cfg.leak_similarity``.

    Returns:
        A JSON-ready report: counts per class and split, imbalance ratio, size/mode/format
        histograms, unreadable files by reason, duplicates within and across splits (exact copies
        by content digest, near copies by :mod:`cnnlab.data.leakage`).
    """
    from tqdm.auto import tqdm

    if near_duplicates not in ("auto", "on", "off"):
        raise ValueError(f"near_duplicates: expected auto, on or off, got {near_duplicates!r}")
    rule = NearDuplicateRule(cfg.leak_hash_bits, cfg.leak_similarity)
    if cfg.source in DATASETS:
        return _inspect_builtin(cfg, seed, out, preview_augment, per_class, near_duplicates == "on", rule)
    fl: FileList = list_files(cfg.source, cfg.image_root, cfg.delimiter, cfg.label_sep)
    with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        probes = list(
            tqdm(
                pool.map(lambda p: _probe(p, cfg.max_pixels), fl.files),
                total=len(fl.files),
                desc="inspecting",
                unit="img",
                disable=not progress,
                leave=False,
            )
        )
    ok = np.asarray([p["ok"] for p in probes], bool)
    keep = np.flatnonzero(ok)
    labels = fl.labels[keep]
    given = given_splits([fl.split_of[i] for i in keep])
    paths = [fl.relpath(fl.files[i]) for i in keep]
    groups = image_groups(paths, [fl.groups[i] for i in keep] if fl.groups is not None else None, cfg.group_by)
    splits = make_splits(labels, given, cfg.split, cfg.val_size, seed, groups) if len(keep) else {}
    split_of = {int(keep[j]): s for s, idx in splits.items() for j in idx}
    multilabel = labels.ndim == 2

    def counts(idx: np.ndarray) -> list[int]:
        y = labels[idx]
        return (y.sum(0) if multilabel else np.bincount(y, minlength=len(fl.classes))).astype(int).tolist()

    per_split = {s: dict(zip(fl.classes, counts(idx))) for s, idx in splits.items()}
    total = np.asarray(counts(np.arange(len(keep)))) if len(keep) else np.zeros(len(fl.classes), int)
    unreadable = fl.skipped + [
        {"path": fl.relpath(fl.files[i]), "reason": probes[i]["reason"]} for i in np.flatnonzero(~ok)
    ]
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(probes):
        if "digest" in p:
            by_hash[p["digest"]].append(i)
    duplicates, leaks = _duplicate_groups(
        by_hash, lambda i: {"path": fl.relpath(fl.files[i]), "split": split_of.get(i), "class": _class_names(fl, i)}
    )
    mismatched = [
        fl.relpath(fl.files[i])
        for i, p in enumerate(probes)
        if p.get("format") in FORMAT_EXTENSIONS and fl.files[i].suffix.lower() not in FORMAT_EXTENSIONS[p["format"]]
    ]
    report = {
        "source": cfg.source,
        "classes": fl.classes,
        "multilabel": multilabel,
        "num_files": len(fl.files) + len(fl.skipped),
        "num_readable": int(len(keep)),
        "ignored_non_image_files": fl.ignored,
        "presplit": bool(given),
        "class_counts": dict(zip(fl.classes, total.tolist())),
        "split_counts": per_split,
        "split_sizes": {s: int(len(idx)) for s, idx in splits.items()},
        "imbalance_ratio": imbalance_ratio(total),
        "sizes": dict(Counter(p["size"] for p in probes if "size" in p).most_common(10)),
        "median_shorter_side": _median_side(p["size"] for p in probes if "size" in p),
        "modes": dict(Counter(p["mode"] for p in probes if "mode" in p)),
        "formats": dict(Counter(p["format"] for p in probes if "format" in p)),
        "extension_mismatch": mismatched,
        "unreadable": unreadable,
        "unreadable_by_reason": dict(Counter(_reason_kind(u["reason"]) for u in unreadable)),
        "duplicates_within_split": duplicates,
        "leaks_across_splits": leaks,
        "groups": None if groups is None else int(len(set(groups))),
    }
    shown: list[tuple[str, list[np.ndarray]]] = []
    if near_duplicates != "off":
        previews = [probes[i]["preview"] for i in keep]
        near, shown = _near_report(
            previews,
            [split_of.get(int(i)) for i in keep],
            [probes[i]["digest"] for i in keep],
            lambda j: {
                "path": fl.relpath(fl.files[keep[j]]),
                "split": split_of.get(int(keep[j])),
                "class": _class_names(fl, int(keep[j])),
            },
            rule,
            progress,
        )
        report.update(near)
    if out is not None:
        out = Path(out)
        if shown:
            _grid(shown, out / "near_duplicates.png")
        rows = []
        for c, name in enumerate(fl.classes):
            members = [i for i in keep if (fl.labels[i][c] if multilabel else fl.labels[i] == c)][:per_class]
            rows.append((name, [probes[i]["preview"] for i in members]))
        _grid(rows, out / "samples.png")
        _augment_preview([torch.from_numpy(probes[i]["preview"]) for i in keep[:4]], preview_augment, out)
        pictures = [out / "samples.png", out / "augment.png"] + ([out / "near_duplicates.png"] if shown else [])
        report["pictures"] = [str(p) for p in pictures]
    return DataReport.model_validate(report)


def _duplicate_groups(
    by_hash: dict[str, list[int]], describe: Callable[[int], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Groups of identical content: (within one split, across splits = leakage)."""
    duplicates: list[dict[str, Any]] = []
    leaks: list[dict[str, Any]] = []
    for h, group in by_hash.items():
        if len(group) < 2:
            continue
        files = [describe(i) for i in group]
        entry = {"digest": h, "files": files}
        in_splits = {e["split"] for e in files if e["split"]}
        (leaks if len(in_splits) > 1 else duplicates).append(entry)
    return duplicates, leaks


def _near_report(
    images: list[np.ndarray],
    split_of: list[str | None],
    digests: list[str],
    describe: Callable[[int], dict[str, Any]],
    rule: NearDuplicateRule,
    progress: bool,
    most_shown: int = 40,
) -> tuple[dict[str, Any], list[tuple[str, list[np.ndarray]]]]:
    """Near-duplicate pairs (not exact copies: those are reported by digest) within a split and
    across splits, and the rows of near_duplicates.png (leaks first). All pairs are searched up to
    ALL_PAIRS_UP_TO images, pairs across splits only above."""
    if progress:
        log.info("hashing %d images for near duplicates", len(images))
    fp = fingerprints(images)
    across_only = len(images) > ALL_PAIRS_UP_TO
    found: dict[bool, list[tuple[int, int, dict[str, Any]]]] = {True: [], False: []}
    for p in near_duplicate_pairs(fp, rule, split_of, across_only=across_only):
        a, b = p["a"], p["b"]
        if not (digests[a] and digests[a] == digests[b]):
            entry = {"files": [describe(a), describe(b)], "bits": p["bits"], "similarity": p["similarity"]}
            found[split_of[a] != split_of[b]].append((a, b, entry))
    rows = [
        (f"{e['files'][0]['split']}~{e['files'][1]['split']} {e['similarity']:.3f}", [images[a], images[b]])
        for a, b, e in (found[True] + found[False])[:most_shown]
    ]
    report = {
        "near_duplicate_rule": {"hash_distance": rule.hash_distance, "similarity": rule.similarity},
        "near_duplicates_searched": "across splits" if across_only else "all pairs",
        "near_duplicates_within_split": [e for _, _, e in found[False]],
        "near_leaks_across_splits": [e for _, _, e in found[True]],
    }
    return report, rows


def _class_names(fl: FileList, i: int) -> str:
    y = fl.labels[i]
    if y.ndim == 0:
        return fl.classes[int(y)]
    return " ".join(fl.classes[j] for j in np.flatnonzero(y))


def _augment_preview(images: list[torch.Tensor], preset: str, out: Path, versions: int = 6) -> None:
    if not images:
        return
    stack = torch.stack(images)
    tf = build_transform(preset, stack.shape[-1], stack.shape[1], images=stack)
    with torch.random.fork_rng():  # previews must not disturb anyone's random stream
        torch.manual_seed(0)
        rows = [
            (f"{preset} #{k + 1}", [img.numpy()] + [(tf(img) if tf else img).numpy() for _ in range(versions)])
            for k, img in enumerate(images)
        ]
    _grid(rows, out / "augment.png")


def _inspect_builtin(
    cfg: DataConfig,
    seed: int,
    out: str | Path | None,
    preview_augment: str,
    per_class: int,
    near: bool,
    rule: NearDuplicateRule,
) -> DataReport:
    spec = DATASETS.get(cfg.source)
    src = spec.loader(data_dir=cfg.data_dir, download=cfg.download)
    splits = make_splits(src.labels, src.given_splits, cfg.split, cfg.val_size, seed)
    k = len(src.classes)
    per_split = {
        s: dict(zip(src.classes, np.bincount(src.labels[idx], minlength=k).tolist())) for s, idx in splits.items()
    }
    total = np.bincount(src.labels, minlength=k)
    images = src.images
    hashes: dict[str, list[int]] = defaultdict(list)
    for i in range(len(images)):
        hashes[hashlib.sha1(images[i].tobytes()).hexdigest()].append(i)
    split_of = {int(j): s for s, idx in splits.items() for j in idx}
    duplicates, leaks = _duplicate_groups(
        hashes, lambda i: {"index": i, "split": split_of.get(i), "class": src.classes[src.labels[i]]}
    )
    report = {
        "source": cfg.source,
        "classes": src.classes,
        "multilabel": False,
        "num_files": int(len(images)),
        "num_readable": int(len(images)),
        "presplit": bool(src.given_splits),
        "class_counts": dict(zip(src.classes, total.tolist())),
        "split_counts": per_split,
        "split_sizes": {s: int(len(idx)) for s, idx in splits.items()},
        "imbalance_ratio": imbalance_ratio(total),
        "sizes": {f"{images.shape[-1]}x{images.shape[-2]}": int(len(images))},
        "median_shorter_side": int(min(images.shape[-2:])),
        "modes": {"L" if images.shape[1] == 1 else "RGB": int(len(images))},
        "formats": {},
        "extension_mismatch": [],
        "unreadable": [],
        "unreadable_by_reason": {},
        "duplicates_within_split": duplicates,
        "leaks_across_splits": leaks,
    }
    shown: list[tuple[str, list[np.ndarray]]] = []
    if near:
        digest_of = {i: h for h, group in hashes.items() for i in group}
        near_part, shown = _near_report(
            list(images),
            [split_of.get(i) for i in range(len(images))],
            [digest_of[i] for i in range(len(images))],
            lambda i: {"index": i, "split": split_of.get(i), "class": src.classes[src.labels[i]]},
            rule,
            True,
        )
        report.update(near_part)
        shown = [(label, [np.broadcast_to(im, (3, *im.shape[1:])) for im in ims]) for label, ims in shown]
    if out is not None:
        out = Path(out)
        if shown:
            _grid(shown, out / "near_duplicates.png")
        small = (
            torch.nn.functional.interpolate(torch.from_numpy(images[:20000]).float(), size=PREVIEW_SIZE, mode="nearest")
            .byte()
            .expand(-1, 3, -1, -1)
            .numpy()
        )
        labels = src.labels[:20000]
        rows = [
            (name, [small[i] for i in np.flatnonzero(labels == c)[:per_class]]) for c, name in enumerate(src.classes)
        ]
        _grid(rows, out / "samples.png")
        _augment_preview([torch.from_numpy(small[i]) for i in range(4)], preview_augment, out)
        pictures = [out / "samples.png", out / "augment.png"] + ([out / "near_duplicates.png"] if shown else [])
        report["pictures"] = [str(p) for p in pictures]
    return DataReport.model_validate(report)


def _median_side(sizes: Any) -> int | None:
    """The median shorter side of ``WxH`` sizes (None when there are none)."""
    sides = [min(int(v) for v in size.split("x")) for size in sizes]
    return int(np.median(sides)) if sides else None
