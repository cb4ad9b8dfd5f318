"""A folder of run folders — a cross-validation, a study — with one JSON state file that says what
kind of folder it is and in which format version. Three ways in: start a new one (refusing a
folder that already holds something), reopen one to resume it (refusing a folder that is not one,
or one written by a newer cnnlab), and save its state (atomically, format and version stamped). A
sweep, whose state is its spec and Optuna study, uses the folder checks alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from cnnlab.core.atomic import atomic_write_json
from cnnlab.core.errors import CnnlabError
from cnnlab.core.state import STATE_VERSION, GroupState, SweepSummary
from cnnlab.runs.store import RunFolder

__all__ = ["GROUP_FILES", "STATE_VERSION", "RunGroup", "group_at", "read_sweep_summary"]

MAX_STATE_BYTES = 64 << 20  # a group's state file: cnnlab writes far smaller ones


StateT = TypeVar("StateT", bound=GroupState)


# kind → (its state file, the command that starts one): the one list of the kinds of group
GROUP_FILES = {
    "cv": ("cv.json", "cnnlab cv --data DATA --model MODEL --out DIR"),
    "study": ("study.json", "cnnlab study DATA --out {out}"),
    "seeds": ("seeds.json", "cnnlab train --seeds N --out DIR"),
}


def group_at(kind: str, out: str | Path) -> RunGroup:
    """The group folder of ``kind`` (cv, study, seeds) at ``out``."""
    state_file, hint = GROUP_FILES[kind]
    return RunGroup(out, kind, state_file, hint.format(out=out))


def read_sweep_summary(path: Path) -> SweepSummary | None:
    """A sweep folder's sweep.json, typed; None before its report is first written.

    Raises:
        CnnlabError: a damaged one (over the size cap, nested too deep, not JSON, refused by its model).
    """
    file = path / "sweep.json"
    if not file.is_file():
        return None
    try:
        return SweepSummary.model_validate(_json_file(file))
    except ValidationError as e:
        raise _refused(file, e, "write the sweep's report again: cnnlab sweep-report DIR") from None


def _json_file(file: Path) -> Any:
    """A state file's JSON, within the size cap; one line when it is over it, too deep or not JSON."""
    try:
        if file.stat().st_size > MAX_STATE_BYTES:
            raise CnnlabError(f"{file} is damaged: over {MAX_STATE_BYTES >> 20} MB")
        return json.loads(file.read_text())
    except RecursionError:
        raise CnnlabError(f"{file} is damaged: nested too deep") from None
    except (ValueError, OSError) as e:
        raise CnnlabError(f"{file} cannot be read ({' '.join(str(e).split())})") from None


def _refused(file: Path, e: ValidationError, then: str) -> CnnlabError:
    """The one line for a state file its model refuses: the field and why, and what to do."""
    err = e.errors()[0]
    where = ".".join(map(str, err["loc"])) or "its contents"
    return CnnlabError(f"{file} is damaged: {where}: {str(err['msg']).removeprefix('Value error, ')}; {then}")


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

    def load(self, model: type[StateT]) -> StateT:
        """The saved state as ``model``: one line naming the field of a damaged or tampered file.

        Raises:
            CnnlabError: a missing, damaged, foreign or newer state file, or one its model refuses.
        """
        state = self._read(model.VERSION)
        try:
            return model.model_validate(state)
        except ValidationError as e:
            raise _refused(self.state_path, e, f"start it again in another folder ({self.start_hint})") from None

    def _read(self, newest: int) -> dict[str, Any]:
        """The saved state as JSON (a state model's ``load`` reads it; ``newest``: the newest
        format version the reader knows); one-line errors for a missing, damaged, foreign or newer file."""
        self.check_not_a_file()
        if not self.has_state():
            raise CnnlabError(
                f"{str(self.path)!r} is not a {self.kind} folder (no {self.state_path.name}); start one with "
                f"{self.start_hint}"
            )
        state = _json_file(self.state_path)
        if not isinstance(state, dict) or state.get("format") != self.format:
            raise CnnlabError(f"{self.state_path} is not a cnnlab {self.kind} file")
        version = state.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CnnlabError(f"{self.state_path} is damaged: its format version is {version!r}")
        if version > newest:
            raise CnnlabError(
                f"{self.state_path} has format version {version!r}; this cnnlab reads up to {newest}: "
                "upgrade cnnlab to open it"
            )
        return state

    def save(self, state: GroupState) -> None:
        """Write ``state`` with this folder's format and its model's version."""
        atomic_write_json(
            self.state_path, {**state.model_dump(mode="json"), "format": self.format, "version": state.VERSION}
        )

    def run(self, *parts: str) -> RunFolder:
        """The run folder at ``path/parts...``."""
        return RunFolder(self.path.joinpath(*parts))
