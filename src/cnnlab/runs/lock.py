"""One process per run folder: an exclusive flock with its holder recorded, and the run's status
as its files and its lock say it."""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cnnlab.core.errors import CnnlabError


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunState:
    """What a run folder's files say, derived honestly (a 'running' run whose process is gone is
    'interrupted'), and the one next step that fits them.

    Attributes:
        status: running, interrupted, failed, completed, or new (no epoch finished).
        detail: why, e.g. "process gone".
        holder: pid/host of the live process holding the run, when running.
        next_step: the command that continues from here (None when nothing is left to do).
    """

    status: str
    detail: str = ""
    holder: str = ""
    next_step: str | None = None

    def describe(self) -> str:
        return self.status + (f" ({self.detail})" if self.detail else "")


class RunLock:
    """An exclusive ``flock`` on RUN/.lock, held for the life of one training, resume or report.

    The kernel drops it when the process dies (kill -9 included), so a stale lock is simply
    free again; the file keeps the last holder's pid/host for messages.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self, what: str) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CnnlabError(
                f"run folder {str(self.path.parent)!r} is in use by {self.holder()}; "
                f"wait for it to finish (or stop it) before you {what}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def is_held_elsewhere(self) -> bool:
        """True while another process (or another open of the file here) holds the lock."""
        if self.fd is not None or not self.path.is_file():
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
