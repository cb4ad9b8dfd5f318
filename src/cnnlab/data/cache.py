"""Decode-once: image files → one uint8 array, kept in memory or in a memory-mapped cache file.

Decoding, EXIF orientation, mode conversion and resizing cost more than training a small
net on a CPU; doing them once and reading a uint8 array afterwards removes that cost from
every later epoch and every later run. The disk cache is keyed by each file's path, size
and modification time plus the preprocessing settings, so any change makes a new entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.core.errors import CnnlabError
from cnnlab.core.locations import cache_dir
from cnnlab.data.images import GREY_MODES, decode_file, describe_error

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: entries record a content digest per file


def content_digest(data: bytes | memoryview) -> str:
    """A cheap digest of bytes (BLAKE2b, 64 bits): part of the data fingerprint, so that
    changed pixels under an unchanged name are noticed."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def file_digest(path: Path) -> str:
    """:func:`content_digest` of a file, read in 1 MiB pieces (a huge file is not held twice)."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


ONE_READ_BYTES = 32 << 20  # files up to this size are read once into memory; larger ones are streamed twice


def decode_one(
    path: Path, channels: int, size: int, max_pixels: int, resample: str = "bilinear"
) -> tuple[np.ndarray | None, str, str]:
    """(array or None, PIL mode or the reason it failed, content digest of the file)."""
    try:
        nbytes = path.stat().st_size
        if nbytes == 0:
            return None, "empty file (0 bytes)", ""
        if nbytes <= ONE_READ_BYTES:  # the usual case: one read serves the digest and the decoder
            data = path.read_bytes()
            arr, mode = decode_file(io.BytesIO(data), channels, size, max_pixels, resample)
            return arr, mode, content_digest(data)
        arr, mode = decode_file(path, channels, size, max_pixels, resample)
        return arr, mode, file_digest(path)
    except Exception as e:  # every failure of one file is recorded, never raised
        return None, describe_error(e), ""


class FileStore:
    """Images decoded from their files on every access (``--cache none``).

    Indexing with a tensor of indices returns a (B, C, S, S) uint8 tensor, like an array.
    """

    def __init__(
        self, files: Sequence[Path], size: int, channels: int, max_pixels: int, workers: int, resample: str = "bilinear"
    ):
        self.files = list(files)
        self.size, self.channels, self.max_pixels, self.resample = size, channels, max_pixels, resample
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int | torch.Tensor | np.ndarray) -> torch.Tensor:
        index = torch.as_tensor(idx)
        idx_list = [int(i) for i in index.reshape(-1)]
        out = list(
            self.pool.map(
                lambda i: decode_file(self.files[i], self.channels, self.size, self.max_pixels, self.resample)[0],
                idx_list,
            )
        )
        batch = torch.from_numpy(np.stack(out)) if out else torch.zeros((0, *self.shape[1:]), dtype=torch.uint8)
        return batch[0] if index.dim() == 0 else batch  # an int gives one image, as a tensor would


@dataclass
class Decoded:
    """Result of :func:`decode_images`.

    Attributes:
        images: (N_kept, C, S, S) uint8 tensor (possibly memory-mapped) or a FileStore.
        keep: indices of the input files that decoded.
        skipped: ``{"path", "reason"}`` of those that did not.
        mode: memory, disk or none: where the pixels live.
        digests: content digest of each kept file (see :func:`content_digest`).
        cache_hit: True when a disk cache entry was reused.
        sums: (N_kept, C, 2) per-image, per-channel sum and sum of squares of the pixels, taken
            by the decoding threads, so the training split's mean/std need no second pass.
    """

    images: torch.Tensor | FileStore
    keep: np.ndarray
    skipped: list[dict[str, str]]
    mode: str
    digests: list[str]
    cache_hit: bool = False
    sums: np.ndarray | None = None


def _key(files: Sequence[Path], size: int, channels: int | None, max_pixels: int, resample: str) -> str:
    h = hashlib.sha1(
        json.dumps(
            {"v": CACHE_VERSION, "size": size, "channels": channels, "max_pixels": max_pixels, "resample": resample}
        ).encode()
    )
    for p in files:
        try:
            st = p.stat()
            h.update(os.fsencode(p.resolve()) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(os.fsencode(p) + b"\0missing\n")
    return h.hexdigest()[:24]


def _choose_mode(mode: str, n: int, size: int, root: Path) -> str:
    if mode != "auto":
        return mode
    need = n * 3 * size * size
    root.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(root).free > need * 1.2 + (1 << 30):
        return "disk"
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return "memory" if need < avail // 2 else "none"


PROCESS_MIN_FILES = 256  # below this, starting processes costs more than it saves
CHUNK = 64  # files per task sent to a decoding process


def _decode_into(
    out: np.ndarray, files: Sequence[Path], start: int, c: int, size: int, max_pixels: int, resample: str
) -> list[tuple[int, bool, str, str, np.ndarray | None]]:
    """Decode ``files`` into ``out[start:]``: (index, ok, mode or reason, digest, channel sums) each.
    Sums and the write happen where the decoding does: NumPy releases the GIL for both."""
    rows = []
    for k, path in enumerate(files):
        i = start + k
        arr, info, digest = decode_one(path, c, size, max_pixels, resample)
        if arr is None:
            rows.append((i, False, info, "", None))
            continue
        out[i] = arr
        flat = arr.reshape(c, -1)
        sums = np.stack([flat.sum(1, dtype=np.uint64), np.square(flat, dtype=np.uint32).sum(1, dtype=np.uint64)], 1)
        rows.append((i, True, info, digest, sums.astype(np.float64)))
    return rows


def _process_chunk(
    target: tuple[str, str, tuple[int, ...], int],
    files: list[str],
    start: int,
    c: int,
    size: int,
    max_pixels: int,
    resample: str,
) -> list[tuple[int, bool, str, str, np.ndarray | None]]:
    """A decoding process's task: open the shared output (a .npy file or a shared-memory block) and
    decode a chunk of files into it."""
    kind, name, shape, offset = target
    if kind == "file":
        out = np.memmap(name, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
        try:
            return _decode_into(out, [Path(f) for f in files], start, c, size, max_pixels, resample)
        finally:
            out.flush()
            del out
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    try:
        out = np.ndarray(shape, np.uint8, buffer=shm.buf)
        rows = _decode_into(out, [Path(f) for f in files], start, c, size, max_pixels, resample)
        del out
        return rows
    finally:
        shm.close()


def _use_processes(workers: int, n: int) -> bool:
    return workers > 1 and n >= PROCESS_MIN_FILES


def _process_pool(workers: int):
    """A pool of decoding processes (forked: no re-import), or None where fork is unavailable."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in mp.get_all_start_methods():
        return None
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))


def _decode_all(
    files: Sequence[Path],
    size: int,
    channels: int | None,
    max_pixels: int,
    workers: int,
    out: np.ndarray,
    progress: bool,
    rel: Callable[[Any], str],
    resample: str,
    target: tuple | None = None,
) -> tuple[np.ndarray, list[dict[str, str]], bool, list[str], np.ndarray]:
    """Decode into ``out`` (N, 3 or C, S, S); returns (kept indices, skipped, all kept grey,
    content digests of the kept files, per-image channel sums of the kept files).

    With ``target`` (how another process opens ``out``: a .npy file or a shared-memory block) and
    enough files, ``workers`` forked processes decode chunks of files in parallel, with no GIL
    between them; otherwise ``workers`` threads do."""
    from tqdm.auto import tqdm

    c = channels or 3
    ok = np.zeros(len(files), bool)
    digests = [""] * len(files)
    sums = np.zeros((len(files), c, 2), np.float64)
    skipped: list[dict[str, str]] = []
    grey = True
    pool = _process_pool(workers) if target is not None and _use_processes(workers, len(files)) else None
    if pool is not None:
        names = [str(f) for f in files]
        tasks = [
            pool.submit(_process_chunk, target, names[i : i + CHUNK], i, c, size, max_pixels, resample)
            for i in range(0, len(files), CHUNK)
        ]
        results = (row for t in tasks for row in t.result())
    else:
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        results = (
            row
            for rows in pool.map(
                lambda i: _decode_into(out, files[i : i + 1], i, c, size, max_pixels, resample), range(len(files))
            )
            for row in rows
        )
    try:
        for i, decoded, info, digest, row in tqdm(
            results, total=len(files), desc="decoding images", unit="img", disable=not progress, leave=False
        ):
            if not decoded:
                skipped.append({"path": rel(files[i]), "reason": info})
                continue
            ok[i], digests[i], sums[i] = True, digest, row
            grey = grey and info in GREY_MODES
    except BaseException:  # Ctrl-C: drop the queued files instead of decoding them all first
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    keep = np.flatnonzero(ok)
    return keep, skipped, grey, [digests[i] for i in keep], sums[keep]


def decode_images(
    files: Sequence[Path],
    size: int,
    channels: int | None,
    *,
    max_pixels: int,
    workers: int = 2,
    mode: str = "auto",
    progress: bool = True,
    rel: Callable[[Any], str] = str,
    resample: str = "bilinear",
) -> Decoded:
    """Decode ``files`` once to (C, size, size) uint8, skipping unreadable ones.

    Args:
        files: image paths.
        size: square side.
        channels: 1 or 3, or None to decode RGB and keep one channel if every image is grey.
        max_pixels: pixel budget per image (see :func:`decode_file`).
        workers: decoding threads.
        mode: auto, memory, disk or none (see the module docstring).
        progress: show a progress bar.
        rel: how a path is named in the skipped list.
        resample: resize filter (bilinear, bicubic...).
    """
    root = cache_dir() / "decoded"
    mode = _choose_mode(mode, len(files), size, root)
    key = _key(files, size, channels, max_pixels, resample)
    entry = root / key
    if mode == "disk" and entry.exists():
        hit = _read_entry(entry, size, channels)
        if hit is not None:
            log.info("decoded-image cache hit: %s (%d images)", entry, len(hit.keep))
            return hit

    c = channels or 3
    shape = (len(files), c, size, size)
    shm = None
    if mode == "disk":
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        full = np.lib.format.open_memmap(tmp / "full.npy", mode="w+", dtype=np.uint8, shape=shape)
        target = ("file", str(tmp / "full.npy"), shape, int(full.offset))
    else:
        from multiprocessing import shared_memory

        nbytes = int(np.prod(shape))
        if _use_processes(workers, len(files)) and nbytes:
            shm = shared_memory.SharedMemory(create=True, size=nbytes)
            full = np.ndarray(shape, np.uint8, buffer=shm.buf)
            target = ("shm", shm.name, shape, 0)
        else:
            full, target = np.empty(shape, np.uint8), None
    try:
        keep, skipped, grey, digests, sums = _decode_all(
            files, size, channels, max_pixels, workers, full, progress, rel, resample, target
        )
        if shm is not None:  # out of shared memory into the process's own
            full = full.copy()
    except BaseException:  # Ctrl-C while decoding: leave no half-built cache entry behind
        if mode == "disk":
            del full
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if shm is not None:
            shm.unlink()
            with contextlib.suppress(BufferError):  # an exception's traceback may still hold a view
                shm.close()
    if not len(keep):
        if mode == "disk":
            shutil.rmtree(tmp, ignore_errors=True)
        raise CnnlabError(
            f"none of the {len(files)} image files could be read (first: {skipped[0]['path']}: {skipped[0]['reason']})"
        )
    out_c = 1 if channels is None and grey else c
    sums = np.ascontiguousarray(sums[:, :out_c])

    if mode == "none":
        store = FileStore([files[i] for i in keep], size, out_c, max_pixels, workers, resample)
        return Decoded(store, keep, skipped, "none", digests, sums=sums)
    if mode == "memory":
        arr = full[keep, :out_c] if (len(keep) < len(files) or out_c != c) else full
        return Decoded(torch.from_numpy(np.ascontiguousarray(arr)), keep, skipped, "memory", digests, sums=sums)

    if len(keep) == len(files) and out_c == c:
        full.flush()
        del full
        os.replace(tmp / "full.npy", tmp / "images.npy")
    else:
        final = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(keep), out_c, size, size)
        )
        for start in range(0, len(keep), 1024):
            final[start : start + 1024] = full[keep[start : start + 1024], :out_c]
        final.flush()
        del final, full
        (tmp / "full.npy").unlink()
    np.save(tmp / "sums.npy", sums)
    (tmp / "meta.json").write_text(
        json.dumps(
            {
                "keep": keep.tolist(),
                "skipped": skipped,
                "digests": digests,
                "files": len(files),
                "size": size,
                "channels": out_c,
            }
        )
    )
    try:
        os.replace(tmp, entry)
    except OSError:  # another process finished the same entry first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    arr = np.load(entry / "images.npy", mmap_mode="c")
    log.info("decoded %d images once into the cache %s", len(arr), entry)
    return Decoded(torch.from_numpy(arr), keep, skipped, "disk", digests, sums=sums)


def _read_entry(entry: Path, size: int, channels: int | None) -> Decoded | None:
    """A cache entry that passes its checks (readable meta and array of the recorded shape), or
    None after removing a broken one (truncated, garbage, half-deleted) so it is rebuilt."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arr = np.load(entry / "images.npy", mmap_mode="c", allow_pickle=False)
        keep = np.asarray(meta["keep"], dtype=np.int64)
        expected = (len(keep), channels or meta["channels"], size, size)
        if arr.dtype != np.uint8 or arr.shape != expected or len(meta["digests"]) != len(keep):
            raise ValueError(f"shape {arr.shape} {arr.dtype}, expected {expected} uint8")
        sums = np.load(entry / "sums.npy", allow_pickle=False) if (entry / "sums.npy").is_file() else None
        if sums is not None and sums.shape != (len(keep), expected[1], 2):
            sums = None
        return Decoded(torch.from_numpy(arr), keep, list(meta["skipped"]), "disk", list(meta["digests"]), True, sums)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning(
            "decoded-image cache entry %s is damaged (%s): decoding again",
            entry,
            " ".join(str(e).split())[:120] or type(e).__name__,
        )
        shutil.rmtree(entry, ignore_errors=True)
        return None
