"""A folder of run folders — a cross-validation, a study — with one JSON state file that says what
kind of folder it is and in which format version. Three ways in: start a new one (refusing a
folder that already holds something), reopen one to resume it (refusing a folder that is not one,
or one written by a newer cnnlab), and save its state (atomically, format and version stamped). A
sweep, whose state is its spec and Optuna study, uses the folder checks alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnlab.core.atomic import atomic_write_json
from cnnlab.core.errors import CnnlabError
from cnnlab.runs.store import RunFolder

__all__ = ["STATE_VERSION", "RunGroup"]

STATE_VERSION = 1  # bumped when a state file changes shape; older files are read, newer refused
MAX_STATE_BYTES = 64 << 20  # a group's state file: cnnlab writes far smaller ones


class RunGroup:
    """The folder ``path`` of ``kind`` ("cv", "study"), whose state lives in ``state_file``.

    Args:
        path: the folder.
        kind: what the folder is; its state file's ``format`` is ``cnnlab-<kind>``.
        state_file: the state file's name inside the folder.
        start_hint: the command that starts such a folder, named when one is missing.
    """

    def __init__(self, path: str | Path, kind: str, state_file: str, start_hint: str):
        self.path, self.kind, self.start_hint = Path(path), kind, start_hint
        self.state_path = self.path / state_file

    @property
    def format(self) -> str:
        return f"cnnlab-{self.kind}"

    def check_not_a_file(self) -> None:
        """``path`` is a folder, or nothing yet."""
        if self.path.exists() and not self.path.is_dir():
            raise CnnlabError(f"--out {str(self.path)!r} is a file, not a folder; choose another --out")

    def check_new(self) -> None:
        """A new folder can be made at ``path``: nothing there, or an empty folder."""
        self.check_not_a_file()
        if self.path.exists() and any(self.path.iterdir()):
            raise CnnlabError(
                f"{self.kind} folder {str(self.path)!r} already exists; add --resume to finish it, or choose "
                "another --out"
            )

    def has_state(self) -> bool:
        return self.state_path.is_file()

    def read(self) -> dict[str, Any]:
        """The saved state; one-line errors for a missing, damaged, foreign or newer file."""
        self.check_not_a_file()
        if not self.has_state():
            raise CnnlabError(
                f"{str(self.path)!r} is not a {self.kind} folder (no {self.state_path.name}); start one with "
                f"{self.start_hint}"
            )
        try:
            if self.state_path.stat().st_size > MAX_STATE_BYTES:
                raise CnnlabError(f"{self.state_path} is damaged: over {MAX_STATE_BYTES >> 20} MB")
            state = json.loads(self.state_path.read_text())
        except RecursionError:
            raise CnnlabError(f"{self.state_path} is damaged: nested too deep") from None
        except (ValueError, OSError) as e:
            raise CnnlabError(f"{self.state_path} cannot be read ({' '.join(str(e).split())})") from None
        if not isinstance(state, dict) or state.get("format") != self.format:
            raise CnnlabError(f"{self.state_path} is not a cnnlab {self.kind} file")
        version = state.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CnnlabError(f"{self.state_path} is damaged: its format version is {version!r}")
        if version > STATE_VERSION:
            raise CnnlabError(
                f"{self.state_path} has format version {version!r}; this cnnlab reads up to {STATE_VERSION}: "
                "upgrade cnnlab to open it"
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` with this folder's format and the current version."""
        atomic_write_json(self.state_path, {**state, "format": self.format, "version": STATE_VERSION})

    def run(self, *parts: str) -> RunFolder:
        """The run folder at ``path/parts...``."""
        return RunFolder(self.path.joinpath(*parts))
