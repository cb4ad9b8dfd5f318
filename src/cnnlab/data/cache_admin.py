"""`cnnlab cache`: what the decode-once and feature caches hold, and cleaning them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from pydantic import BaseModel

from cnnlab.core.locations import cache_dir

__all__ = ["CacheAction", "CacheEntry", "Cleaned", "clean_cache", "list_cache", "manage_cache"]

KINDS = {"decoded": "decoded images", "features": "backbone features"}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _describe(kind: str, entry: Path) -> str:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return "(no description)"
    if kind == "decoded":
        return f"{len(meta.get('keep', []))} images {meta.get('size')}×{meta.get('size')}×{meta.get('channels')}"
    return f"{meta.get('images')} features of {meta.get('model')} at {meta.get('input_size')} px"


class CacheEntry(BaseModel):
    """One cache entry: its kind, key, size, age and what it holds."""

    kind: str
    key: str
    mb: float
    age_days: float
    holds: str
    path: str


class Cleaned(BaseModel):
    """What a clean removed."""

    removed: int
    mb: float


class CacheAction(BaseModel):
    """`cnnlab cache list|clean`: the entries listed, or what a clean removed."""

    entries: list[CacheEntry] = []
    cleaned: Cleaned | None = None


def list_cache(kind: str = "all") -> list[CacheEntry]:
    """Entries of the caches under $CNNLAB_CACHE (default ~/.cache/cnnlab): kind, key, MB, age in
    days and what they hold, newest first."""
    rows = []
    for k in KINDS if kind == "all" else [kind]:
        folder = cache_dir() / k
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not entry.is_dir() or ".tmp" in entry.name:
                continue
            age = (time.time() - entry.stat().st_mtime) / 86400
            rows.append(CacheEntry(kind=k, key=entry.name, mb=round(_size(entry) / 2**20, 1), age_days=round(age, 1),
                                    holds=_describe(k, entry), path=str(entry)))  # fmt: skip
    return sorted(rows, key=lambda r: r.age_days)


def clean_cache(kind: str = "all", older_than_days: float | None = None) -> Cleaned:
    """Delete cache entries of ``kind`` (all ages, or only those older than ``older_than_days``).
    The entries are rebuilt when a run needs them again."""
    removed = [r for r in list_cache(kind) if older_than_days is None or r.age_days > older_than_days]
    for r in removed:
        shutil.rmtree(r.path, ignore_errors=True)
    return Cleaned(removed=len(removed), mb=round(sum(r.mb for r in removed), 1))


def manage_cache(action: str = "list", kind: str = "all", older_than: float | None = None) -> CacheAction:
    """`cnnlab cache [list|clean]`: the entries (:func:`list_cache`), or what :func:`clean_cache` removed."""
    if action == "clean":
        return CacheAction(cleaned=clean_cache(kind, older_than))
    return CacheAction(entries=list_cache(kind))
