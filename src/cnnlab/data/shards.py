"""Sharded streaming data: WebDataset tar shards written by `cnnlab data shard`, and batches read
from them without holding the dataset in memory.

A shard folder holds ``<split>-NNNNNN.tar`` files (one sample per image: ``KEY.png`` with the
decoded, resized pixels — or ``KEY.u8``, the raw (C, S, S) bytes, for images of at most
``RAW_MAX_BYTES``, which a tar stores in one 512-byte block either way and which need no
decoding — and ``KEY.cls`` with the class index), ``labels-<split>.npy`` (the labels
in shard order: small, and what class counts, weights and metrics need) and ``index.json``
(classes, input size, channels, normalisation statistics of the training split, the shards of
each split with their sample counts, the source's fingerprint). Training streams the shards:
shard order shuffled per (seed, epoch), a shuffle buffer in each reading worker process, PNG
decoding in those workers, and under torchrun each rank reads its own shards.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.core.errors import CnnlabError
from cnnlab.core.results import ShardFile, ShardIndex, ShardSplit
from cnnlab.data.images import open_image

log = logging.getLogger(__name__)

FORMAT = "cnnlab-shards/1"
INDEX = "index.json"
SPLITS = ("train", "val", "test")
RAW_MAX_BYTES = 4096  # up to 64×64 grey: raw pixels, no PNG to decode
RETRY_SECONDS = 20.0  # how long a shard URL is retried (5xx, timeouts) before the read fails
SHARD_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.tar$")  # a plain name in the shard folder


# ---------------------------------------------------------------------------------------------- writing
def webdataset_module() -> Any:
    try:
        import webdataset
    except ImportError:
        raise CnnlabError("sharded data needs the webdataset package: pip install webdataset") from None
    return webdataset


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_shards(
    data: Any, out: str | Path, shard_mb: float = 100.0, progress: bool = True, description: str = ""
) -> ShardIndex:
    """Write ``data`` (a :class:`~cnnlab.data.pipeline.PreparedData`) as WebDataset shards in ``out``.

    Returns:
        The index (also written to ``out/index.json``, last, so a folder without it is unfinished).
    """
    from tqdm.auto import tqdm

    wds = webdataset_module()

    if data.multilabel:
        raise CnnlabError("cnnlab data shard writes single-label datasets; this one is multi-label")
    out = Path(out)
    if (out / INDEX).exists():
        raise CnnlabError(f"--out {out}: already holds shards (index.json); choose another folder or remove it")
    if out.exists() and any(out.iterdir()):
        raise CnnlabError(f"--out {out}: is not empty; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    images = data.images.numpy() if isinstance(data.images, torch.Tensor) else data.images
    labels = data.labels.numpy()
    splits: dict[str, ShardSplit] = {}
    total = sum(len(v) for v in data.splits.values())
    bar = tqdm(total=total, desc="writing shards", unit="img", disable=not progress, leave=False)
    started = time.perf_counter()
    for name in SPLITS:
        idx = np.asarray(data.splits.get(name, []), dtype=np.int64)
        if not len(idx):
            continue
        pattern = str(out / f"{name}-%06d.tar")
        raw = int(np.prod(images.shape[1:])) <= RAW_MAX_BYTES
        counts: dict[str, int] = {}  # samples per shard file, in writing order
        with wds.ShardWriter(pattern, maxsize=int(shard_mb * 1e6), maxcount=10**9, verbose=0) as sink:
            for n, i in enumerate(idx):
                pixels = np.ascontiguousarray(np.asarray(images[i]), dtype=np.uint8)
                sink.write(
                    {
                        "__key__": f"{n:09d}",
                        **({"u8": pixels.tobytes()} if raw else {"png": _png(pixels)}),
                        "cls": int(labels[i]),
                    }
                )
                shard = Path(sink.fname).name  # the file this sample went into
                counts[shard] = counts.get(shard, 0) + 1
                bar.update(1)
        written = [ShardFile(file=f, count=c) for f, c in counts.items()]
        np.save(out / f"labels-{name}.npy", labels[idx].astype(np.int64))
        splits[name] = ShardSplit(count=int(len(idx)), shards=written)
    bar.close()
    index = ShardIndex(source=data.source, description=description, classes=data.classes, input_size=data.input_size,
                       channels=data.channels, normalize=data.normalize, mean=data.mean, std=data.std,
                       fingerprint=data.fingerprint(), splits=splits,
                       seconds=round(time.perf_counter() - started, 2))  # fmt: skip
    (out / INDEX).write_text(json.dumps(index.model_dump(mode="json"), indent=1))
    return index


# ---------------------------------------------------------------------------------------------- reading
def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def is_shard_source(source: str) -> bool:
    """A folder (or http(s) folder URL) holding a cnnlab shard index."""
    if is_url(source):
        return source.rstrip("/").endswith(INDEX) or source.endswith("/")
    return (Path(source) / INDEX).is_file() or (source.endswith(INDEX) and Path(source).is_file())


def read_index(source: str) -> tuple[dict[str, Any], str]:
    """The index of a shard folder and the base (folder path or URL) its files are relative to."""
    if is_url(source):
        url = source if source.endswith(INDEX) else source.rstrip("/") + "/" + INDEX
        try:
            with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (http(s) only, checked above)
                index = json.loads(r.read().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise CnnlabError(f"data.source {source!r}: cannot read {url} ({e})") from None
        base = url[: -len(INDEX)]
    else:
        path = Path(source)
        path = path if path.name == INDEX else path / INDEX
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CnnlabError(f"{path}: not a readable shard index ({e})") from None
        base = str(path.parent) + "/"
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CnnlabError(f"data.source {source!r}: its index.json is not a cnnlab shard index ({FORMAT})")
    problem = _index_problem(index)
    if problem:
        raise CnnlabError(f"{base}{INDEX}: {problem}; write the shards again (cnnlab data shard)")
    return index, base


def _index_problem(index: dict[str, Any]) -> str | None:
    """What is wrong with a shard index read from anywhere, or None: its fields' types and ranges,
    shard files that are plain names inside the folder (no '..', no '/'), counts that add up."""
    classes = index.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "'classes' must be a non-empty list of names"
    if index.get("channels") not in (1, 3):
        return f"'channels' is {index.get('channels')!r}, not 1 or 3"
    size = index.get("input_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
        return f"'input_size' is {size!r}, not a whole number from 1 to 4096"
    for key in ("mean", "std"):
        v = index.get(key)
        if not isinstance(v, list) or len(v) != index["channels"] or not all(isinstance(x, (int, float)) for x in v):
            return f"'{key}' must be {index['channels']} numbers"
    splits = index.get("splits")
    if not isinstance(splits, dict) or not set(splits) <= set(SPLITS):
        return f"'splits' must map some of {', '.join(SPLITS)} to their shards"
    for name, sp in splits.items():
        shards = sp.get("shards") if isinstance(sp, dict) else None
        if not isinstance(shards, list) or not isinstance(sp.get("count"), int) or sp["count"] < 0:
            return f"split {name!r} needs a 'count' and a list of 'shards'"
        for sh in shards:
            if not isinstance(sh, dict) or not isinstance(sh.get("file"), str) or not SHARD_FILE.match(sh["file"]):
                file = sh.get("file") if isinstance(sh, dict) else sh
                return f"split {name!r}: shard {file!r} is not a .tar file name in the shard folder"
            if not isinstance(sh.get("count"), int) or isinstance(sh["count"], bool) or sh["count"] < 0:
                return f"split {name!r}: shard {sh['file']!r} has no whole-number 'count'"
        held = sum(sh["count"] for sh in shards)
        if held != sp["count"]:
            return f"split {name!r}: its shards hold {held} samples, its count says {sp['count']}"
    return None


class ShardImages:
    """The pixels of a shard folder, addressed like an (N, C, S, S) uint8 array whose index runs
    over train, then val, then test, in shard order. Streaming goes through :class:`ShardBatches`;
    indexing (a few images for a report) reads the shards that hold them, keeping recently read
    shards decoded within a small memory budget."""

    def __init__(self, index: dict[str, Any], base: str, cache_bytes: int = 256 * 2**20):
        self.index, self.base = index, base
        self.ranges: dict[str, tuple[int, int]] = {}
        start = 0
        for name in SPLITS:
            n = int(index["splits"].get(name, {}).get("count", 0))
            self.ranges[name] = (start, start + n)
            start += n
        c, s = int(index["channels"]), int(index["input_size"])
        self.shape = (start, c, s, s)
        self.dtype = torch.uint8
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def urls(self, split: str) -> list[tuple[str, int]]:
        return [(self.base + s["file"], int(s["count"])) for s in self.index["splits"].get(split, {}).get("shards", [])]

    def whole_split(self, indices: Sequence[int]) -> str | None:
        """The split whose whole range ``indices`` is, if it is one."""
        idx = np.asarray(indices)
        for name, (a, b) in self.ranges.items():
            if b > a and len(idx) == b - a and idx.min() == a and idx.max() == b - 1:
                return name
        return None

    def split_of(self, indices: Any) -> str:  # indices: a sequence, array or tensor of ints
        """The split whose whole range ``indices`` is (streaming reads whole splits)."""
        name = self.whole_split(indices)
        if name is not None:
            return name
        raise CnnlabError(
            "sharded data is read a whole split at a time (train, val or test); this part of it cannot be streamed"
        )

    def _shard_pixels(self, url: str, count: int) -> np.ndarray:
        if url in self._cache:
            self._cache.move_to_end(url)
            return self._cache[url]
        arrays = [x for x, _ in _samples([(url, count)], self.shape[1:], len(self.index["classes"]))]
        block = np.stack(arrays) if arrays else np.zeros((0, *self.shape[1:]), np.uint8)
        self._cache[url] = block
        while len(self._cache) > 1 and sum(v.nbytes for v in self._cache.values()) > self._cache_bytes:
            self._cache.popitem(last=False)
        return block

    def __getitem__(self, idx: Any) -> torch.Tensor:
        single = isinstance(idx, (int, np.integer)) or (isinstance(idx, torch.Tensor) and idx.dim() == 0)
        flat = np.atleast_1d(np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64))
        out = np.zeros((len(flat), *self.shape[1:]), np.uint8)
        for name, (a, _b) in self.ranges.items():
            offset = a
            for url, count in self.urls(name):
                hit = np.nonzero((flat >= offset) & (flat < offset + count))[0]
                if len(hit):
                    out[hit] = self._shard_pixels(url, count)[flat[hit] - offset]
                offset += count
        t = torch.from_numpy(out)
        return t[0] if single else t


class ShardDamaged(CnnlabError):
    """A shard that is not what its index says: one line naming the shard and the damage."""

    def __init__(self, url: str, what: str):
        super().__init__(f"damaged shard {url}: {what}; write the shards again (cnnlab data shard)")


def _kind(m: tarfile.TarInfo) -> str:
    return "symbolic link" if m.issym() else "hard link" if m.islnk() else "device or FIFO"


class SampleDecoder:
    """One sample's members → (C, S, S) uint8 pixels and its class index, every member checked:
    raw pixels of exactly C·S·S bytes, or a PNG of exactly S × S in the right mode (its header read
    before any pixel), a class index below the number of classes (picklable: it goes to the
    reading processes)."""

    def __init__(self, shape: tuple[int, int, int], classes: int):
        self.shape, self.classes = shape, classes

    def __call__(self, url: str, key: str, parts: dict[str, bytes]) -> tuple[np.ndarray, int]:
        c, h, w = self.shape
        if "cls" not in parts or not ("u8" in parts or "png" in parts):
            raise ShardDamaged(url, f"sample {key!r} lacks its {'class' if 'cls' not in parts else 'pixels'}")
        try:
            label = int(parts["cls"].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise ShardDamaged(url, f"sample {key!r}: its class is not a whole number") from None
        if not 0 <= label < self.classes:
            raise ShardDamaged(url, f"sample {key!r}: class {label} is not one of the {self.classes} classes")
        if "u8" in parts:
            if len(parts["u8"]) != c * h * w:
                raise ShardDamaged(url, f"sample {key!r}: {len(parts['u8'])} pixel bytes, not {c * h * w}")
            return np.frombuffer(parts["u8"], np.uint8).reshape(self.shape), label
        try:
            with open_image(io.BytesIO(parts["png"])) as im:
                want = "L" if c == 1 else "RGB"
                if im.format != "PNG" or im.size != (w, h) or im.mode != want:
                    raise ShardDamaged(
                        url, f"sample {key!r}: a {im.format} {im.size} {im.mode} image, not a {w}×{h} {want} PNG"
                    )
                arr = np.asarray(im, dtype=np.uint8)
        except ShardDamaged:
            raise
        except Exception as e:
            raise ShardDamaged(url, f"sample {key!r}: not a readable PNG ({' '.join(str(e).split())[:120]})") from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr), label


def open_shard(url: str) -> Any:
    """A shard file, or its http(s) URL with retries for at most ``RETRY_SECONDS`` (a 4xx fails at once)."""
    if not is_url(url):
        try:
            return open(url, "rb")
        except OSError as e:
            raise ShardDamaged(url, f"cannot be opened ({e.strerror or e})") from None
    deadline, wait = time.monotonic() + RETRY_SECONDS, 0.5
    while True:
        try:
            return urllib.request.urlopen(url, timeout=10)  # noqa: S310 (http(s) only, checked above)
        except urllib.error.HTTPError as e:
            if e.code < 500 or time.monotonic() + wait > deadline:
                raise ShardDamaged(url, f"the server answered {e.code} {e.reason}") from None
        except OSError as e:
            if time.monotonic() + wait > deadline:
                raise ShardDamaged(url, f"cannot be fetched ({e})") from None
        time.sleep(wait)
        wait = min(wait * 2, 4.0)


def read_samples(url: str, shape: tuple[int, int, int], classes: int) -> Iterator[tuple[np.ndarray, int]]:
    """Every sample of one shard in order, checked as it is read: regular members only, each no
    larger than its kind allows (seen in its header, before it is read), named KEY.png|u8|cls.
    Written by hand over ``tarfile`` (WebDataset's reader checks none of this)."""
    decode = SampleDecoder(shape, classes)
    c, h, w = shape
    caps = {"u8": c * h * w, "cls": 32, "png": 2 * c * h * w + 65536}
    key: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with open_shard(url) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                if m.isdir():
                    continue
                if not m.isreg():
                    raise ShardDamaged(url, f"member {m.name!r} is a {_kind(m)}, not a file")
                stem, _, ext = m.name.rpartition("/")[2].partition(".")
                if ext not in caps:
                    raise ShardDamaged(url, f"member {m.name!r} is not KEY.png, KEY.u8 or KEY.cls")
                if m.size > caps[ext]:
                    raise ShardDamaged(
                        url, f"member {m.name!r} is {m.size:,} bytes; a .{ext} here is at most {caps[ext]:,}"
                    )
                data = tar.extractfile(m).read()  # type: ignore[union-attr]  # a regular member has a file
                if stem != key and parts:
                    yield decode(url, str(key), parts)
                    parts = {}
                key = stem
                parts[ext] = data
            if parts:
                yield decode(url, str(key), parts)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ShardDamaged(url, f"not a readable tar ({' '.join(str(e).split())[:120]})") from None
    except OSError as e:
        raise ShardDamaged(url, f"cannot be read ({e})") from None


def counted_samples(
    url: str, count: int, shape: tuple[int, int, int], classes: int
) -> Iterator[tuple[np.ndarray, int]]:
    """:func:`read_samples`, then a check that the shard held the ``count`` samples its index says
    (a short shard is an error, not a short epoch)."""
    n = 0
    for sample in read_samples(url, shape, classes):
        n += 1
        if n > count:
            raise ShardDamaged(url, f"holds more samples than the {count} its index says")
        yield sample
    if n != count:
        raise ShardDamaged(url, f"holds {n} samples; its index says {count}")


def _samples(urls: Sequence[tuple[str, int]], shape: tuple[int, ...], classes: int) -> Iterator[tuple[np.ndarray, int]]:
    """Every sample of ``urls`` (url, count) in order, in this process."""
    for url, count in urls:
        yield from counted_samples(url, count, (int(shape[0]), int(shape[1]), int(shape[2])), classes)


class ShardStream(torch.utils.data.IterableDataset):
    """Batches of ``batch`` samples read from ``urls`` ((url, count) pairs): each reading process
    takes every n-th shard; with ``seed``, its samples pass through a shuffle buffer of ``buffer``."""

    def __init__(self, urls: list[tuple[str, int]], shape: tuple[int, int, int], classes: int, batch: int,
                 seed: int | None = None, buffer: int = 4096):  # fmt: skip
        self.urls, self.shape, self.classes, self.batch = urls, shape, classes, batch
        self.seed, self.buffer = seed, buffer

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = random.Random(self.seed * 7919 + worker) if self.seed is not None else None
        pool: list[tuple[np.ndarray, int]] = []
        out: list[tuple[np.ndarray, int]] = []
        for url, count in self.urls[worker::workers]:
            for sample in counted_samples(url, count, self.shape, self.classes):
                if rng is None:
                    out.append(sample)
                else:
                    pool.append(sample)
                    if len(pool) >= self.buffer:
                        i = rng.randrange(len(pool))
                        pool[i], pool[-1] = pool[-1], pool[i]
                        out.append(pool.pop())
                if len(out) == self.batch:
                    yield collate(out)
                    out = []
        if rng is not None:
            rng.shuffle(pool)
        for sample in pool:
            out.append(sample)
            if len(out) == self.batch:
                yield collate(out)
                out = []
        if out:
            yield collate(out)


def as_one_line(e: Exception, split: str) -> CnnlabError:
    """A reading process's exception (torch re-raises it with the worker's traceback in its text)
    as the one line a user sees."""
    found = re.search(r"damaged shard .*?cnnlab data shard\)", str(e))
    if found:
        return CnnlabError(found.group(0))
    return CnnlabError(f"the {split} shards could not be read ({type(e).__name__}: {str(e).splitlines()[-1][:200]})")


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.stack([x for x, _ in batch])), torch.tensor([y for _, y in batch], dtype=torch.long)
