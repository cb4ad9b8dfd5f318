"""The board's index: every run folder, CV, sweep and study under a root, found by their markers and
kept up to date by their files' modification times (a rescan re-reads only what changed)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.core.errors import CnnlabError
from cnnlab.core.metrics import catalogue, headline
from cnnlab.core.schema import flatten_config
from cnnlab.core.state import CvState, SweepSummary
from cnnlab.core.study import StudyState
from cnnlab.core.yamlio import read_yaml_file
from cnnlab.runs.group import group_at, read_sweep_summary
from cnnlab.runs.store import MARKER, RunFolder
from cnnlab.runs.tables import read_table

# the config values the index shows (those that differ between the runs it lists)
KEY_FIELDS = (
    "model.name",
    "data.source",
    "optim.lr",
    "optim.weight_decay",
    "train.epochs",
    "train.batch_size",
    "train.seed",
    "data.input_size",
    "data.augment",
    "model.fine_tune",
    "optim.name",
    "train.schedule",
)
SKIP = {"checkpoints", "report", "explain", "export", "tensorboard", "wandb", "mlflow-artifacts", "__pycache__"}
WATCHED = ("run.json", "metrics.json", "history.csv", "config.yaml", "steps.csv")
MAX_EPOCHS = 10_000  # history rows read per run (the last ones): a history of any size is read in bounds
MAX_JSON = 64 << 20  # bytes: no state file cnnlab writes comes near it


@dataclass
class Index:
    """The entries under ``root`` (paths relative to it) and what each was read from."""

    root: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    signatures: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    version: int = 0
    scan_seconds: float = 0.0

    def scan(self) -> list[str]:
        """Walk the tree again; re-read the folders whose files changed (and running runs, whose
        lock says whether their process is alive). Returns the paths that changed."""
        started = time.perf_counter()
        seen: set[str] = set()
        changed: list[str] = []
        for kind, path in _folders(self.root):
            rel = path.relative_to(self.root).as_posix() or "."
            seen.add(rel)
            sig = _signature(kind, path)
            old = self.entries.get(rel)
            if old is not None and self.signatures.get(rel) == sig and old.get("status") != "running":
                continue
            entry = _read(kind, path, rel, self.root)
            if old != entry:
                changed.append(rel)
            self.entries[rel], self.signatures[rel] = entry, sig
        for rel in set(self.entries) - seen:
            del self.entries[rel]
            self.signatures.pop(rel, None)
            changed.append(rel)
        if changed:
            self.version += 1
        self.scan_seconds = time.perf_counter() - started
        return changed

    def resolve(self, rel: str) -> Path:
        """The folder or file ``rel`` names under the root; refused (CnnlabError) when it leaves the
        root, through ``..`` or a symbolic link."""
        root = self.root.resolve()
        target = (root / rel).resolve()
        if target != root and root not in target.parents:
            raise CnnlabError(f"{rel!r} is outside the board's root")
        return target


class OutsideRoot(CnnlabError):
    """A file the board was asked to read that is a link leading out of its root."""


def check_links(root: Path, folder: Path) -> None:
    """Every link directly inside ``folder`` (a run's config.yaml, metrics.json, history.csv …) stays
    under ``root``: the JSON routes refuse what `/file/` refuses.

    Raises:
        OutsideRoot: naming the first link that leads out.
    """
    top = root.resolve()
    try:
        children = [c for c in folder.iterdir() if c.is_symlink()]
    except OSError:
        return
    for child in children:
        target = child.resolve()
        if target != top and top not in target.parents:
            raise OutsideRoot(f"{child.relative_to(root).as_posix()} is a link that leads out of the board's root")


def _folders(root: Path) -> Any:
    """(kind, path) of every run folder, CV, sweep and study under ``root``; symbolic links to
    folders are not followed, a run folder's own subfolders are not walked."""
    for top, dirs, files in os.walk(root, followlinks=False):
        names = set(files)
        here = Path(top)
        if MARKER in names:
            dirs[:] = []
            yield "run", here
            continue
        if "study.json" in names:
            yield "study", here
        elif "cv.json" in names:
            yield "cv", here
        elif "sweep.yaml" in names and "trials" in dirs:
            yield "sweep", here
        dirs[:] = sorted(d for d in dirs if d not in SKIP and not d.startswith("."))


def _signature(kind: str, path: Path) -> tuple[Any, ...]:
    names = WATCHED if kind == "run" else ("study.json", "cv.json", "sweep.yaml", "sweep.json")
    out: list[tuple[int, int] | None] = []
    for name in names:
        try:
            st = os.stat(path / name)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def json_object(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing, half-written or not an object (the board lists
    what it can and never stops on one damaged folder)."""
    try:
        if path.stat().st_size > MAX_JSON:
            raise CnnlabError(f"{path.name} is damaged: over {MAX_JSON >> 20} MB")
        value = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise CnnlabError(f"{path.name} is damaged: nested too deep") from None
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read(kind: str, path: Path, rel: str, root: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": rel, "kind": kind, "name": path.name, "age": _age(path)}
    try:
        check_links(root, path)
        entry.update(_read_run(path) if kind == "run" else _read_group(kind, path))
    except CnnlabError as e:  # a damaged folder is listed as such, not dropped
        entry.update(status="damaged", detail=str(e))
    return entry


def _age(path: Path) -> float:
    try:
        return round(time.time() - path.stat().st_mtime, 1)
    except OSError:
        return 0.0


def flat_config(run: RunFolder) -> dict[str, Any]:
    """A run's config.yaml as dotted keys, read as plain data (not validated: a board lists runs of
    any cnnlab version); {} when there is none."""
    if not run.config.is_file():
        return {}
    tree = read_yaml_file(run.config, "run config")
    return flatten_config(tree) if isinstance(tree, dict) else {}


def metric_columns() -> list[dict[str, Any]]:
    """The board's metric columns: the catalogue's headline rows (name, label, direction, ...), served
    with the index so that the page draws whatever the catalogue holds."""
    return [m.as_json() for m in catalogue() if m.headline]


def headline_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The catalogue's headline figures that ``metrics`` holds as numbers (the board's columns)."""
    return {k: metrics[k] for k in headline() if isinstance(metrics.get(k), (int, float))}


def _read_run(path: Path) -> dict[str, Any]:
    run = RunFolder(path)
    state = run.state()
    info = json_object(run.run_json)
    metrics = json_object(run.metrics_json)
    history = read_table(run.history_csv, last=MAX_EPOCHS)
    config = flat_config(run)
    vals = [float(h["val_acc"]) for h in history if h.get("val_acc")]
    return {
        "status": state.status,
        "detail": state.detail,
        "model": config.get("model.name") or info.get("model"),
        "data": config.get("data.source"),
        "config": {k: config.get(k) for k in KEY_FIELDS if k in config},
        "epochs_done": int(history[-1]["epoch"]) if history else 0,
        "best_val_acc": max(vals) if vals else None,
        "split": metrics.get("split"),
        "metrics": headline_figures(metrics),
        "seconds": info.get("total_seconds") or info.get("train_seconds"),
        "report": (path / "report.html").is_file(),
    }


def group_state(kind: str, path: Path) -> CvState | StudyState | SweepSummary | None:
    """A CV's, study's or sweep's state, read through its model (None: a sweep before its first report).

    Raises:
        CnnlabError: a damaged, foreign or newer state file.
    """
    if kind == "sweep":
        return read_sweep_summary(path)
    if kind == "cv":
        return group_at(kind, path).load(CvState)
    return group_at(kind, path).load(StudyState)


def _read_group(kind: str, path: Path) -> dict[str, Any]:
    state = group_state(kind, path)
    out: dict[str, Any] = {"status": "running", "config": {}}
    if isinstance(state, CvState):
        means = {k: v.mean for k, v in (state.summary or {}).items()}
        out.update(status=state.status, model=state.model, data=state.data, best_val_acc=means.get("accuracy"))
        out.update(split="out-of-fold", metrics=headline_figures(means))
    elif isinstance(state, StudyState):
        summ = state.summary
        out.update(status=state.status, model=summ.winner if summ else None, data=state.settings.data)
        out.update(split="test", metrics=headline_figures((summ.winner_test if summ else None) or {}))
    else:
        out.update(model=None, data=None, best_val_acc=(state.best or {}).get("value") if state else None)
        if state:
            out["status"] = "completed" if state.done == state.budget else out["status"]
    out["report"] = any((path / n).is_file() for n in ("report.html", "cv.html", "sweep.html"))
    return out
