"""Atomic file writes (temp file beside the target, fsync, rename) with one-line disk errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cnnlab.core.errors import DiskError

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, rename: readers see the old or the
    new file, never half. Any failure removes the temp file; OS errors become a DiskError."""
    tmp = None
    try:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise DiskError(path, e) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8; undecodable file-name bytes kept as escapes) atomically."""
    atomic_write_bytes(Path(path), text.encode("utf-8", "backslashreplace"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(Path(path), json.dumps(obj, indent=2) + "\n")
