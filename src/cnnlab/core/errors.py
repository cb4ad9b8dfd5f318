"""Errors that are the user's to fix: the CLI prints them on one line and exits with code 2."""

import errno
from pathlib import Path


class CnnlabError(Exception):
    """A problem with the user's input (config, data, run folder), with what to do about it."""


class DiskError(CnnlabError):
    """A file could not be written (disk full, read-only, no permission): one line naming the path."""

    def __init__(self, path: Path, err: OSError):
        advice = {
            errno.ENOSPC: "the disk is full: free some space",
            errno.EDQUOT: "the disk quota is used up: free some space",
            errno.EROFS: "the file system is read-only: choose a writable folder",
            errno.EACCES: "permission denied: choose a folder you may write to",
            errno.EPERM: "permission denied: choose a folder you may write to",
        }
        self.path, self.errno = Path(path), err.errno
        super().__init__(f"cannot write {path}: {advice.get(err.errno or 0, err.strerror or str(err))}")
