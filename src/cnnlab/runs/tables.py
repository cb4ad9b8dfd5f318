"""A run's tables (history.csv, steps.csv), read as cnnlab writes them and, for a viewer of files of
any size, from their end; and the one-line error every damaged run file is reported with."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cnnlab.core.errors import CnnlabError

__all__ = ["TAIL_BYTES", "damaged", "read_table"]


def damaged(path: Path, what: str) -> CnnlabError:
    """The error of a run file that is not as cnnlab writes it."""
    return CnnlabError(f"{path} is damaged: {what}; train the run again (or restore the file)")


def read_table(path: Path, key: str = "epoch", last: int | None = None) -> list[dict[str, str]]:
    """history.csv / steps.csv as cnnlab writes them: UTF-8 text, a ``key`` column of whole numbers
    from 1, numbers (or empty cells) elsewhere; [] when absent. With ``last``, only the header and
    the last rows are read, from the end of the file (at most ``TAIL_BYTES``): a board showing a
    file of any size reads a bounded part of it."""
    if not path.is_file():
        return []
    try:
        text = (path.read_bytes() if last is None else _tail(path, last)).decode("utf-8")
    except UnicodeDecodeError:
        raise damaged(path, "it is not UTF-8 text") from None
    except OSError as e:
        raise CnnlabError(f"{path} cannot be read ({e.strerror or e})") from None
    if "\x00" in text:
        raise damaged(path, "it holds NUL bytes")
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:
        raise damaged(path, f"not CSV ({e})") from None
    if path.name == "history.csv" and not rows:
        raise damaged(path, "it has no epochs")
    for n, row in enumerate(rows, 2):
        if key not in row or None in row:
            raise damaged(path, f"line {n} does not fit its header (a {key!r} column and one value per column)")
        if not row[key].isdigit() or int(row[key]) < 1:
            raise damaged(path, f"line {n}: {key} is {row[key]!r}")
        for k, v in row.items():
            if v not in ("", None) and not _is_number(v):
                raise damaged(path, f"line {n}: {k} is {v[:40]!r}, not a number")
    return rows


TAIL_BYTES = 8 << 20  # the most read from the end of a table for its last rows


def _tail(path: Path, rows: int) -> bytes:
    """The header line and the last ``rows`` lines of ``path``, reading backwards in blocks."""
    with open(path, "rb") as f:
        header = f.readline(1 << 16)
        f.seek(0, 2)
        start = end = f.tell()
        data = b""
        while start > len(header) and data.count(b"\n") <= rows and end - start < TAIL_BYTES:
            start = max(len(header), start - (1 << 16))
            f.seek(start)
            data = f.read(end - start)
    lines = data.split(b"\n")
    if start > len(header):  # the first line read is a part of one
        lines = lines[1:]
    lines = [line for line in lines if line.strip()][-rows:]
    return header + b"\n".join(lines) + (b"\n" if lines else b"")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
