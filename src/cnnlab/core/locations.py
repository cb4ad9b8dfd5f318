"""Where cnnlab keeps what outlives a run: its cache folder (decoded datasets, features, the
test-set ledger, the digests of this machine's exports)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """cnnlab's cache folder: $CNNLAB_CACHE, else ~/.cache/cnnlab."""
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab")
