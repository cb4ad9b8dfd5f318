"""Reading a small text file a user names — a label CSV, an ``--exclude`` list, a ``--label-map``, a
config — whole and bounded, with one-line errors: it must be a regular file (a FIFO or a device
would block the command or never end), under a size cap, UTF-8 text without NUL bytes. Pure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cnnlab.core.errors import CnnlabError

__all__ = ["MAX_TABLE_BYTES", "not_regular", "read_text_file"]

MAX_TABLE_BYTES = 256 << 20  # a label CSV of a few million rows; a table beyond that is not a label file


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file (missing, a folder, a FIFO, socket or device), or None."""
    try:
        mode = os.stat(path).st_mode  # through a symbolic link, as open() would
    except FileNotFoundError:
        return "not found"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device); give a file"
    return None


def read_text_file(path: str | Path, what: str, limit: int = MAX_TABLE_BYTES) -> str:
    """The text of ``path`` (UTF-8, a byte-order mark dropped), at most ``limit`` bytes.

    Raises:
        CnnlabError: ``what`` and the path, and why: missing, not a regular file, too large, not UTF-8
            text, NUL bytes.
    """
    where = f"{what} {str(path)!r}"
    problem = not_regular(path)
    if problem:
        raise CnnlabError(f"{where} {problem}")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)  # never more, even if the file grows while it is read
    except OSError as e:
        raise CnnlabError(f"{where} cannot be read ({e.strerror or e})") from None
    if len(raw) > limit:
        raise CnnlabError(f"{where} is over {limit:,} bytes; that is not a file cnnlab reads whole")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CnnlabError(f"{where} is not UTF-8 text (byte {e.start})") from None
    if "\x00" in text:
        raise CnnlabError(f"{where} is not text (it holds NUL bytes)")
    return text
