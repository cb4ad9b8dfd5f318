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
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.core.errors import CnnlabError

log = logging.getLogger(__name__)

FORMAT = "cnnlab-shards/1"
INDEX = "index.json"
SPLITS = ("train", "val", "test")
RAW_MAX_BYTES = 4096  # up to 64×64 grey: raw pixels, no PNG to decode


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
) -> dict[str, Any]:
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
    splits: dict[str, Any] = {}
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
        written = [{"file": f, "count": c} for f, c in counts.items()]
        np.save(out / f"labels-{name}.npy", labels[idx].astype(np.int64))
        splits[name] = {"count": int(len(idx)), "shards": written}
    bar.close()
    index = {
        "format": FORMAT,
        "source": data.source,
        "description": description,
        "classes": data.classes,
        "input_size": data.input_size,
        "channels": data.channels,
        "normalize": data.normalize,
        "mean": data.mean,
        "std": data.std,
        "fingerprint": data.fingerprint(),
        "splits": splits,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / INDEX).write_text(json.dumps(index, indent=1))
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
    return index, base


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

    def _shard_pixels(self, url: str) -> np.ndarray:
        if url in self._cache:
            self._cache.move_to_end(url)
            return self._cache[url]
        arrays = [x for x, _ in _samples([url], self.shape[1:])]
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
                    out[hit] = self._shard_pixels(url)[flat[hit] - offset]
                offset += count
        t = torch.from_numpy(out)
        return t[0] if single else t


class SampleDecoder:
    """One WebDataset sample → (C, S, S) uint8 pixels and its class index (picklable: it goes to the
    reading processes)."""

    def __init__(self, shape: tuple[int, int, int]):
        self.shape = shape

    def __call__(self, sample: dict[str, Any]) -> tuple[np.ndarray, int]:
        if "u8" in sample:
            return np.frombuffer(sample["u8"], np.uint8).reshape(self.shape), int(sample["cls"])
        from PIL import Image

        arr = np.asarray(Image.open(io.BytesIO(sample["png"])), dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr), int(sample["cls"])


def _samples(urls: Sequence[str], shape: tuple[int, ...]) -> Iterator[tuple[np.ndarray, int]]:
    """Every sample of ``urls`` in order, in this process."""
    wds = webdataset_module()

    ds = wds.WebDataset(list(urls), shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False).map(
        SampleDecoder((int(shape[0]), int(shape[1]), int(shape[2])))
    )
    yield from ds


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.stack([x for x, _ in batch])), torch.tensor([y for _, y in batch], dtype=torch.long)
