"""Turn a DataConfig and a model's defaults into split, decoded, normalisable images."""

from __future__ import annotations

import hashlib
import io
import logging
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import DataConfig
from cnnlab.data import shards
from cnnlab.data.cache import content_digest
from cnnlab.data.files import excluded_images, list_files, shown_path
from cnnlab.data.images import open_image
from cnnlab.data.leakage import NearDuplicateRule, training_leaks
from cnnlab.data.shards import is_shard_source
from cnnlab.data.sources import DATASETS, SourceImages, load_files
from cnnlab.data.split import image_groups, imbalance_ratio, make_splits

log = logging.getLogger(__name__)

NICE_SIZES = (28, 32, 48, 64, 96, 128, 160, 192, 224)  # candidate input sides for image files
STATS_SAMPLE = 5000  # images used for mean/std when pixels are decoded on demand


@dataclass
class PreparedData:
    """A dataset ready for training: decoded once, split, with its normalisation.

    Attributes:
        images: (N, C, H, W) uint8 tensor (maybe memory-mapped) or a FileStore.
        labels: (N,) int64, or (N, K) uint8 multi-hot for multi-label data.
        classes: class names.
        splits: indices per split name.
        mean, std: per-channel statistics (0..1 scale) of the training split.
        source: the dataset name, folder or label file.
        skipped: unreadable files with reasons.
        paths: relative file path per image (file-based sources).
        cache: where the decoded pixels live: memory, disk or none.
        normalize: how batches are normalised: mean-std (with ``mean``/``std``), per-image, none.
        groups: a group name per image (``data.group_by`` or a CSV's group column), or None.
        leaks: what the leakage guard (``data.on_leak``) found: validation and test images that
            are copies of training images, and what was done; None when it did not look.
    """

    images: Any
    labels: torch.Tensor
    classes: list[str]
    splits: dict[str, np.ndarray]
    mean: list[float]
    std: list[float]
    source: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] | None = None
    cache: str = "memory"
    normalize: str = "mean-std"

    @property
    def input_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def multilabel(self) -> bool:
        return self.labels.dim() == 2

    content: str | None = None
    image_set: str | None = None
    groups: np.ndarray | None = None
    leaks: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """Identity of the decoded set's files, their contents and labels, to check that a saved
        split applies."""
        return "v2:" + fingerprint(self.images.shape, self.labels.numpy(), self.paths, self.content)

    def images_id(self) -> str:
        """Which images these are, whatever their decoding (size, channels): the files' own
        digests (file sources) or the dataset's name (built-in arrays), with the labels and paths.
        Two runs that decoded one set differently were still tested on the same images."""
        h = hashlib.sha1()
        h.update(str(len(self.labels)).encode())
        h.update(np.ascontiguousarray(self.labels.numpy(), dtype=np.int64).tobytes())
        if self.paths is not None:
            h.update("\n".join(self.paths).encode("utf-8", "surrogateescape"))
        h.update((self.image_set or self.fingerprint()).encode())
        return "images:" + h.hexdigest()

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Images per class in ``split`` (positives per class for multi-label data)."""
        y = self.labels.numpy()[self.splits[split]]
        return y.sum(0).astype(np.int64) if self.multilabel else np.bincount(y, minlength=len(self.classes))

    def summary(self) -> dict:
        """Counts per split and class, for the run folder and the console."""
        counts = {s: self.class_counts(s).tolist() for s in self.splits}
        total = np.sum([np.asarray(c) for c in counts.values()], axis=0)
        return {
            "source": self.source,
            "classes": self.classes,
            "multilabel": self.multilabel,
            "num_images": int(len(self.labels)),
            "input_size": self.input_size,
            "channels": self.channels,
            "normalize": self.normalize,
            "mean": self.mean,
            "std": self.std,
            "cache": self.cache,
            "split_sizes": {s: int(len(i)) for s, i in self.splits.items()},
            "class_counts": counts,
            "imbalance_ratio": imbalance_ratio(total) or 1.0,
            "skipped": self.skipped,
        }


def fingerprint(shape: Sequence[int], labels: np.ndarray, paths: list[str] | None, content: str | None = None) -> str:
    """Hash of image shape, labels, file paths and (when known) the content digest of the
    pixels: what a saved split depends on. Runs saved before content digests existed stored
    the hash without ``content`` (and without the "v2:" prefix) and are checked that way."""
    h = hashlib.sha1()
    h.update(str(tuple(shape)).encode())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    if paths is not None:
        h.update("\n".join(paths).encode("utf-8", "surrogateescape"))  # file names may be any bytes
    if content is not None:
        h.update(content.encode())
    return h.hexdigest()


# One process often converts one built-in array set to one (size, channels) again and again — a
# sweep worker's trials, a study's candidates, CV folds: on Fashion-MNIST at 64 px that is 1.7 s of
# a 2.4 s trial start. The last conversion is kept, keyed by the raw pixels' digest (changed files
# are another key), with the digest of its result; nothing writes into these arrays.
_CONVERTED: dict[tuple[str, int | None, int | None, str], tuple[np.ndarray, str]] = {}


def _converted(images: np.ndarray, size: int | None, channels: int | None, resample: str) -> np.ndarray:
    key = (content_digest(memoryview(np.ascontiguousarray(images)).cast("B")), size, channels, resample)
    if key not in _CONVERTED:
        arr = _resize_array(images, size, channels, resample)
        _CONVERTED.clear()
        _CONVERTED[key] = (arr, content_digest(memoryview(np.ascontiguousarray(arr)).cast("B")))
    return _CONVERTED[key][0]


def content_of(src: SourceImages) -> str:
    """One digest of every image's content: the files' own digests, or the pixels of an array."""

    if src.digests is not None:
        return content_digest("\n".join(src.digests).encode())
    for arr, digest in _CONVERTED.values():
        if src.images is arr:
            return digest
    if isinstance(src.images, (np.ndarray, torch.Tensor)):
        arr = src.images.numpy() if isinstance(src.images, torch.Tensor) else src.images
        return content_digest(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return ""


def _guard_leaks(
    cfg: DataConfig, images: Any, split_idx: dict[str, np.ndarray], paths: list[str], content: str | None
) -> dict[str, Any] | None:
    """``data.on_leak``: find validation/test images that are exact or near copies of training
    images (cnnlab.data.leakage) and warn, drop them from their split (in place), or refuse."""
    if cfg.on_leak == "off":
        return None
    rule = NearDuplicateRule(cfg.leak_hash_bits, cfg.leak_similarity)
    pairs = training_leaks(images, split_idx, rule, key=content)
    for e in pairs:
        e.update(path=paths[e["index"]], train_path=paths[e["train_index"]])
    found = {"rule": {"hash_distance": rule.hash_distance, "similarity": rule.similarity}, "pairs": pairs}
    if not pairs:
        return {**found, "action": cfg.on_leak, "dropped": 0}
    where = ", ".join(f"{n} {s}" for s, n in Counter(e["split"] for e in pairs).items())
    shown = "; ".join(f"{shown_path(e['path'])} ~ {shown_path(e['train_path'])} ({e['similarity']})" for e in pairs[:5])
    more = f" and {len(pairs) - 5} more" if len(pairs) > 5 else ""
    if cfg.on_leak == "refuse":
        raise CnnlabError(
            f"data.source {cfg.source!r}: {len(pairs)} evaluation images ({where}) are copies of training images "
            f"(pHash within {rule.hash_distance} bits, pixel correlation ≥ {rule.similarity}): {shown}{more}. "
            "Remove the copies, keep related images together (a CSV group column or --group-by), or pass "
            "--on-leak drop to leave them out of val/test (--on-leak warn trains anyway)"
        )
    if cfg.on_leak == "drop":
        for name in ("val", "test"):
            gone = {e["index"] for e in pairs if e["split"] == name}
            kept = np.asarray([i for i in split_idx[name] if int(i) not in gone], np.int64)
            if len(split_idx[name]) and not len(kept):
                raise CnnlabError(
                    f"data.source {cfg.source!r}: every {name} image copies a training image ({shown}{more}); "
                    "--on-leak drop would leave the split empty: remove the copies or group related images"
                )
            split_idx[name] = kept
        log.warning(
            "left out %d evaluation images (%s) that copy training images: %s%s", len(pairs), where, shown, more
        )
    else:
        log.warning(
            "%d evaluation images (%s) are near copies of training images: %s%s; the test figure without them is "
            "reported beside the raw one (leaks.json lists them; --on-leak drop leaves them out)",
            len(pairs), where, shown, more,
        )  # fmt: skip
    return {**found, "action": cfg.on_leak, "dropped": len(pairs) if cfg.on_leak == "drop" else 0}


def drop_empty_classes(src: SourceImages, drop: bool, source: str) -> SourceImages:
    """Classes left without images (an empty folder, or only unreadable files) are an error, or
    with ``drop`` are removed (labels renumbered); a model must not get outputs no image has."""
    y = src.labels
    counts = y.sum(0) if y.ndim == 2 else np.bincount(y, minlength=len(src.classes))
    empty = [c for c, n in zip(src.classes, counts) if n == 0]
    if not empty:
        return src
    if not drop:
        raise CnnlabError(
            f"data.source {source!r}: class(es) {', '.join(map(repr, empty))} have no usable images "
            "(empty, or every file unreadable); add images, or pass --drop-empty-classes"
        )
    keep = np.flatnonzero(counts > 0)
    if len(keep) < 2:
        raise CnnlabError(f"data.source {source!r}: only {len(keep)} class has images; a classifier needs 2")
    log.warning("dropped %d class(es) without usable images: %s", len(empty), ", ".join(empty))
    if y.ndim == 2:
        src.labels = y[:, keep]
    else:
        src.labels = np.searchsorted(keep, y).astype(np.int64)
    src.classes = [src.classes[i] for i in keep]
    return src


class ModelInputs(Protocol):
    """What the data needs to know of a model (a models.ModelSpec is one): data does not import
    models; the caller passes the model's input defaults in."""

    # read-only: a frozen ModelSpec is one
    @property
    def name(self) -> str: ...

    @property
    def default_input_size(self) -> int: ...

    @property
    def fixed_input_size(self) -> bool: ...

    @property
    def fixed_channels(self) -> int | None: ...

    @property
    def interpolation(self) -> str: ...

    @property
    def mean(self) -> tuple[float, ...] | None: ...

    @property
    def std(self) -> tuple[float, ...] | None: ...


def resolve_input(cfg: DataConfig, spec: ModelInputs) -> tuple[int | None, int | None, str]:
    """(size, channels, resize filter) to decode with: the flags, else the model's needs, else the data's own.

    Size: ``--input-size``; a model with a fixed input (pretrained nets) uses its own;
    size-flexible models take a built-in dataset's native size; for image files it is None
    here and chosen from the images themselves (:func:`choose_input_size`). Channels:
    ``--channels``, the model's fixed channels, else None = the data's own. The filter is the
    pretrained model's.
    """
    builtin = DATASETS.get(cfg.source) if cfg.source in DATASETS else None
    size = cfg.input_size
    if size is None:
        if spec.fixed_input_size:
            size = spec.default_input_size
        elif builtin is not None:
            size = builtin.native_size
    channels = cfg.channels or spec.fixed_channels
    return size, channels, spec.interpolation


def _resize_array(images: np.ndarray, size: int, channels: int | None, resample: str = "bilinear") -> np.ndarray:
    imgs = torch.from_numpy(images)
    if channels and channels != imgs.shape[1]:
        if channels == 3:
            imgs = imgs.repeat(1, 3, 1, 1)
        else:  # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            imgs = (imgs.float() * w).sum(1, keepdim=True).round().clamp(0, 255).byte()
    if size != imgs.shape[-1]:
        out = []
        for chunk in imgs.split(4096):
            mode = "bicubic" if resample == "bicubic" else "bilinear"
            r = F.interpolate(chunk.float(), size=(size, size), mode=mode, antialias=True, align_corners=False)
            out.append(r.round().clamp(0, 255).byte())
        imgs = torch.cat(out)
    return imgs.numpy()


def choose_input_size(files: Sequence[Any], spec: ModelInputs, sample: int = 200) -> tuple[int, int]:
    """(input side, the images' median shorter side) for image files and a size-flexible model.

    The largest of :data:`NICE_SIZES` not above the median shorter side of a sample of the
    images (read from their headers) and not above the model's cap: its default size, at
    least 64 (small dense nets and CNNs grow fast with the input); 28 when the images are
    smaller than that.
    """

    sides = []
    for f in list(files)[:: max(1, len(files) // sample)][:sample]:
        try:
            with open_image(f) as im:
                sides.append(min(im.size))
        except Exception:  # unreadable files are reported by the decode step
            continue
    median = int(np.median(sides)) if sides else NICE_SIZES[0]
    cap = max(64, spec.default_input_size)
    fitting = [s for s in NICE_SIZES if s <= min(median, cap)]
    return (fitting[-1] if fitting else NICE_SIZES[0]), median


def load_source(
    cfg: DataConfig,
    size: int | None,
    channels: int | None,
    progress: bool = True,
    resample: str = "bilinear",
    spec: ModelInputs | None = None,
) -> SourceImages:
    """Built-in arrays converted to (size, channels), or files decoded once (at a size chosen from
    the images when ``size`` is None)."""
    if cfg.source in DATASETS:
        src = DATASETS.get(cfg.source).loader(data_dir=cfg.data_dir, download=cfg.download)
        src.images = _converted(src.images, size, channels, resample)
        return src
    files = list_files(cfg.source, cfg.image_root, cfg.delimiter, cfg.label_sep)
    if size is None:
        size, median = choose_input_size(files.files, spec)
        log.info(
            "input size %d×%d, chosen from the images (median shorter side %d px) and the model %s; "
            "set --input-size to change it",
            size,
            size,
            median,
            spec.name,
        )
    return load_files(
        files,
        size,
        channels,
        max_pixels=cfg.max_pixels,
        workers=cfg.workers,
        cache=cfg.cache,
        progress=progress,
        resample=resample,
    )


def _subsample_train(train: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """At most ``per_class`` training images of each class, chosen with ``seed``."""
    if labels.ndim == 2:
        raise CnnlabError("data.train_per_class is for single-label data; this dataset is multi-label")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(train[labels[train] == c])[:per_class] for c in np.unique(labels[train])]
    return np.sort(np.concatenate(keep))


def train_share(train: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of the training images, of each class (single-label; at least one each) or of
    all (multi-label), from one seeded order: a smaller share is a subset of a larger one."""
    order = np.random.default_rng(seed).permutation(train)
    if labels.ndim == 2:
        return np.sort(order[: max(1, round(fraction * len(order)))])
    keep = []
    for c in np.unique(labels[train]):
        members = order[labels[order] == c]
        keep.append(members[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(keep))


def _normalisation(
    cfg: DataConfig, spec: ModelInputs, images: Any, train_idx: np.ndarray, sums: np.ndarray | None = None
) -> tuple[str, list[float], list[float]]:
    """(mode, mean, std): the pretrained model's statistics for auto/model, else the training split's."""
    if cfg.normalize in ("per-image", "none"):
        return cfg.normalize, [0.0] * images.shape[1], [1.0] * images.shape[1]
    if cfg.normalize == "model" and spec.mean is None:
        raise CnnlabError(f"data.normalize 'model': {spec.name!r} has no pretrained statistics; use auto or dataset")
    if cfg.normalize in ("auto", "model") and spec.mean is not None:
        mean, std = list(spec.mean), list(spec.std)
        if images.shape[1] == 1:  # grey input to an RGB net: its first conv sums the channels
            mean, std = [float(np.mean(mean))], [float(np.mean(std))]
        return "mean-std", mean, std
    mean, std = _channel_stats(images, train_idx, sums)
    return "mean-std", mean, std


def _channel_stats(
    images: Any, train_idx: np.ndarray, sums: np.ndarray | None = None
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..1 scale) of the training images: from the sums the decoding
    threads took when there are some, else by reading the pixels (a sample when decoded on demand)."""
    if sums is not None and len(sums) == images.shape[0]:
        part = sums[np.asarray(train_idx, dtype=np.int64)]
        pixels = len(train_idx) * images.shape[2] * images.shape[3]
        mean = torch.from_numpy(part[:, :, 0].sum(0)) / pixels / 255.0
        var = torch.from_numpy(part[:, :, 1].sum(0)) / pixels / 255.0**2 - mean**2
        std = var.clamp_min(1e-12).sqrt().clamp_min(1e-3)
        return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
    idx = np.sort(train_idx)
    if not isinstance(images, torch.Tensor) and len(idx) > STATS_SAMPLE:
        idx = np.sort(np.random.default_rng(0).choice(idx, STATS_SAMPLE, replace=False))
    array = images.numpy() if isinstance(images, torch.Tensor) else None
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(idx), 256):  # small chunks keep the float copy small
        part = idx[start : start + 256]
        x = (torch.from_numpy(array[part]) if array is not None else images[torch.from_numpy(part)]).float()
        total += x.sum(dim=(0, 2, 3)).double()
        total_sq += (x * x).sum(dim=(0, 2, 3)).double()
    pixels = len(idx) * images.shape[2] * images.shape[3]
    mean = total / pixels / 255.0
    var = total_sq / pixels / 255.0**2 - mean**2
    std = var.clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def prepare_data(
    cfg: DataConfig,
    model: ModelInputs,
    seed: int,
    splits: dict[str, list[int]] | None = None,
    expect_fingerprint: str | None = None,
    progress: bool = True,
    hold_out_test: bool = False,
) -> PreparedData:
    """Load, decode, split and measure a dataset for ``model``.

    Args:
        cfg: the data section of the config.
        model: the input defaults of the model (``models.get_spec(name)``).
        seed: seeds the split.
        splits: a saved split to reuse exactly (from a run folder) instead of making one.
        expect_fingerprint: the data fingerprint saved with ``splits``; a mismatch means the
            files or labels changed and the split no longer applies.
        progress: show a progress bar while decoding files.
        hold_out_test: leave the test split out entirely (a sweep trial tunes on validation
            figures only; the test split is for the final model).
    """

    if is_shard_source(cfg.source):  # streamed: labels in memory, pixels read from the shards as batches go
        return load_shards(cfg.source, expect_fingerprint, splits, hold_out_test, cfg.input_size, cfg.channels)
    size, channels, resample = resolve_input(cfg, model)
    src = drop_empty_classes(
        load_source(cfg, size, channels, progress, resample, model), cfg.drop_empty_classes, cfg.source
    )
    labels = src.labels
    content = content_of(src)
    if expect_fingerprint and expect_fingerprint != (
        "v2:" + fingerprint(src.images.shape, labels, src.paths, content)
        if expect_fingerprint.startswith("v2:")
        else fingerprint(src.images.shape, labels, src.paths)
    ):
        raise CnnlabError(
            f"data.source {cfg.source!r} no longer matches the data this run was trained on "
            "(files, their pixels or labels changed), so its saved split cannot be reused"
        )
    groups = image_groups(src.paths, src.groups, cfg.group_by)
    if splits is None:
        split_idx = make_splits(labels, src.given_splits, cfg.split, cfg.val_size, seed, groups)
        if cfg.train_per_class:
            split_idx["train"] = _subsample_train(split_idx["train"], labels, cfg.train_per_class, seed)
        if cfg.train_fraction is not None and cfg.train_fraction < 1:
            split_idx["train"] = train_share(split_idx["train"], labels, cfg.train_fraction, seed)
    else:
        split_idx = {k: np.asarray(v, dtype=np.int64) for k, v in splits.items()}
        for k, v in split_idx.items():
            if len(v) and (v.min() < 0 or v.max() >= len(labels)):
                raise CnnlabError(
                    f"the saved {k} split names image {int(v.max() if v.max() >= len(labels) else v.min())}; "
                    f"{cfg.source} has {len(labels)} images: the split.json is damaged"
                )
    if hold_out_test:
        split_idx["test"] = np.zeros(0, dtype=np.int64)
    if cfg.exclude:
        left_out = excluded_images(cfg.exclude, src.paths, len(labels))
        for name in ("train", "val"):
            split_idx[name] = split_idx[name][~np.isin(split_idx[name], left_out)]
    if len(split_idx["train"]) == 0:
        raise CnnlabError(f"data.source {cfg.source!r}: the training split is empty")
    images = (
        src.images if not isinstance(src.images, np.ndarray) else torch.from_numpy(np.ascontiguousarray(src.images))
    )
    leaks = _guard_leaks(cfg, images, split_idx, src.paths, content) if src.paths is not None else None
    mode, mean, std = _normalisation(cfg, model, images, split_idx["train"], src.pixel_sums)
    return PreparedData(
        images=images,
        labels=torch.from_numpy(np.asarray(labels)),
        classes=src.classes,
        splits=split_idx,
        mean=mean,
        std=std,
        source=cfg.source,
        skipped=src.skipped,
        paths=src.paths,
        cache=src.cache,
        normalize=mode,
        content=content,
        groups=groups,
        leaks=leaks,
        image_set=content if src.digests is not None else f"built-in {cfg.source}" if cfg.source in DATASETS else None,
    )


def load_shards(
    source: str,
    expect_fingerprint: str | None = None,
    splits: dict[str, Any] | None = None,
    hold_out_test: bool = False,
    input_size: int | None = None,
    channels: int | None = None,
) -> Any:
    """A :class:`~cnnlab.data.pipeline.PreparedData` over a shard folder: labels in memory, pixels
    streamed."""

    index, base = shards.read_index(source)
    images = shards.ShardImages(index, base)
    for what, want, have in (("input_size", input_size, images.shape[-1]), ("channels", channels, images.shape[1])):
        if want is not None and int(want) != int(have):
            raise CnnlabError(
                f"data.{what} {want}: the shards in {source} hold {have}; write shards at that size "
                f"(cnnlab data shard … --{what.replace('_', '-')} {want}) or leave it unset"
            )
    labels = []
    for name in shards.SPLITS:
        if name not in index["splits"]:
            continue
        f = base + f"labels-{name}.npy"
        try:
            if shards.is_url(base):
                with urllib.request.urlopen(f, timeout=30) as r:  # noqa: S310
                    arr = np.load(io.BytesIO(r.read()), allow_pickle=False)
            else:
                arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CnnlabError(f"{f}: cannot read the labels of the {name} shards ({e})") from None
        want = index["splits"][name]["count"]
        if arr.ndim != 1 or len(arr) != want or arr.dtype.kind not in "iu":
            raise CnnlabError(f"{f}: holds {arr.shape} {arr.dtype} labels, not the {want} whole numbers of its split")
        if len(arr) and not (arr.min() >= 0 and arr.max() < len(index["classes"])):
            raise CnnlabError(f"{f}: a label is outside 0 … {len(index['classes']) - 1} (the classes)")
        labels.append(arr.astype(np.int64))
    all_labels = torch.from_numpy(np.concatenate(labels)) if labels else torch.zeros(0, dtype=torch.long)
    ranges = {k: np.arange(a, b, dtype=np.int64) for k, (a, b) in images.ranges.items()}
    if splits is not None and any(not np.array_equal(np.asarray(splits.get(k, [])), v) for k, v in ranges.items()):
        raise CnnlabError(f"data.source {source!r}: the saved split does not match these shards' splits")
    if hold_out_test:
        ranges["test"] = np.zeros(0, dtype=np.int64)
    if not len(ranges["train"]):
        raise CnnlabError(f"data.source {source!r}: the shards have no training split")
    data = PreparedData(
        images=images,
        labels=all_labels,
        classes=list(index["classes"]),
        splits=ranges,
        mean=list(index["mean"]),
        std=list(index["std"]),
        source=source,
        cache="shards",
        normalize=index.get("normalize", "mean-std"),
        content=index["fingerprint"],
    )
    if expect_fingerprint and expect_fingerprint != data.fingerprint():
        raise CnnlabError(f"data.source {source!r}: these shards are not the data this run was trained on")
    return data
