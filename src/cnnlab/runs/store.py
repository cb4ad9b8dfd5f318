"""The run folder: its layout, atomic writes, status, and reading a run back."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from cnnlab.checkpoints import load_weights_file
from cnnlab.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from cnnlab.core.errors import CnnlabError, DiskError
from cnnlab.core.metrics import headline, shares
from cnnlab.core.schema import build_config
from cnnlab.core.yamlio import read_yaml_file
from cnnlab.runs.lock import RunLock, RunState, now
from cnnlab.runs.predictions import load_predictions
from cnnlab.runs.tables import damaged, read_table

__all__ = ["NullRunFolder", "RunFolder", "RunLock", "RunState", "now"]

if TYPE_CHECKING:
    from cnnlab.core.schema import Config

# A run folder:
#   config.yaml         the resolved config
#   run.json            status (running / interrupted / failed / completed), times, versions, params
#   dataset.json        classes, split sizes, class counts, normalisation, skipped files
#   split.json          exact indices of every split and the data fingerprint
#   history.csv         one row per epoch
#   checkpoints/last.pt full training state (resume); checkpoints/best.pt best weights
#   metrics.json        test-set evaluation of best.pt (written last: its presence means done)


def _number(text: str) -> Any:
    if text in ("", None):
        return None
    try:
        return float(text)
    except ValueError:
        return text


OBJECT_FILES = ("run.json", "metrics.json", "dataset.json", "split.json")  # each holds one JSON object
MAX_JSON_BYTES = 64 << 20  # a run's JSON files: cnnlab writes far smaller ones


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_metrics(path: Path, m: dict[str, Any]) -> None:
    """metrics.json as cnnlab writes it: shares in [0, 1], numbers where numbers go."""
    for key in shares():
        v = m.get(key)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
            raise damaged(path, f"{key} is {v!r}, not a share between 0 and 1")
    for key, kind in (("split", str), ("per_class", dict), ("confusion_matrix", list), ("checkpoint", str)):
        if key in m and not isinstance(m[key], kind):
            raise damaged(path, f"{key} is not a {kind.__name__}")
    for key in ("num_samples", "best_epoch"):
        if m.get(key) is not None and not _whole(m[key]):
            raise damaged(path, f"{key} is {m[key]!r}, not a whole number")


def check_split(path: Path, saved: Any, images: int | None = None) -> dict[str, Any]:
    """split.json as cnnlab writes it: a fingerprint and, per split, distinct whole-number image
    indices from 0 (below ``images`` when known) that no other split shares."""
    indices = saved.get("indices") if isinstance(saved, dict) else None
    if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), str) or not isinstance(indices, dict):
        raise damaged(path, "it needs a fingerprint and lists of image indices")
    seen: dict[int, str] = {}
    for name, idx in indices.items():
        if name not in ("train", "val", "test") or not isinstance(idx, list):
            raise damaged(path, f"{name!r} is not a split with a list of image indices")
        for i in idx:
            if not _whole(i) or i < 0 or (images is not None and i >= images):
                limit = f" below {images}" if images is not None else ""
                raise damaged(path, f"{name} holds {i!r}, not an image index from 0{limit}")
            if i in seen:
                other = "twice" if seen[i] == name else f"in both {seen[i]} and {name}"
                raise damaged(path, f"image {i} is {other}: the splits must not share images")
            seen[i] = name
    return saved


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


MARKER = ".cnnlab-run"  # written first into every run folder: --overwrite deletes only folders holding it
LOCK = ".lock"  # flock'ed by the one process that trains or writes into the run
# what a run folder may hold: --overwrite refuses a folder with anything else in it
CHECKPOINT_SUFFIXES = (".pt", ".npz")  # torch, scratch (NumPy) engine
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow.db", "wandb": "wandb"}  # where each writes
TRACKER_FILES = ("mlflow-artifacts",)  # MLflow's artifacts, for the run's own local store
RUN_ENTRIES = {
    MARKER,
    LOCK,
    "config.yaml",
    "run.json",
    "dataset.json",
    "split.json",
    "leaks.json",
    "history.csv",
    "steps.csv",
    "metrics.json",
    "predictions.npz",
    "report.html",
    "checkpoints",
    "report",
    "explain",
    "export",
    *TRACKERS.values(),
    *TRACKER_FILES,
}


class RunFolder:
    """Paths and small read/write helpers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = RunLock(self.path / LOCK)

    config = property(lambda self: self.path / "config.yaml")
    run_json = property(lambda self: self.path / "run.json")
    dataset_json = property(lambda self: self.path / "dataset.json")
    split_json = property(lambda self: self.path / "split.json")
    leaks_json = property(lambda self: self.path / "leaks.json")
    history_csv = property(lambda self: self.path / "history.csv")
    metrics_json = property(lambda self: self.path / "metrics.json")
    last_ckpt = property(lambda self: self._checkpoint_file("last"))
    best_ckpt = property(lambda self: self._checkpoint_file("best"))

    def _checkpoint_file(self, which: str) -> Path:
        """checkpoints/WHICH.pt (torch), or .npz where the NumPy engine wrote one; one that is a
        link to somewhere outside this run (another run's weights, any file) is refused."""
        for suffix in CHECKPOINT_SUFFIXES:
            p = self.path / "checkpoints" / f"{which}{suffix}"
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(self.path.resolve()):
                    raise CnnlabError(
                        f"{p} is a link to {target}, outside the run folder: a run's checkpoint must be its own"
                    )
            if p.is_file():
                return p
        return self.path / "checkpoints" / f"{which}.pt"

    marker = property(lambda self: self.path / MARKER)
    steps_csv = property(lambda self: self.path / "steps.csv")
    predictions_npz = property(lambda self: self.path / "predictions.npz")
    report_html = property(lambda self: self.path / "report.html")

    # ------------------------------------------------------------------ ownership
    def is_run(self) -> bool:
        """Whether the folder carries cnnlab's run marker (a run.json alone proves nothing)."""
        try:
            return json.loads(self.marker.read_text()).get("format") == "cnnlab-run"
        except (OSError, ValueError, AttributeError):
            return False

    def lock(self, what: str = "use it") -> RunFolder:
        """Hold the run's exclusive lock until :meth:`unlock` (or the process ends).

        Raises:
            CnnlabError: another live process holds it (named by pid and host).
        """
        try:
            self._lock.acquire(what)
        except OSError as e:
            raise DiskError(self._lock.path, e) from None
        self._remove_temp_files()
        return self

    def unlock(self) -> None:
        self._lock.release()

    def _remove_temp_files(self) -> None:
        """Temp files of atomic writes and scratch folders of report/export interrupted by a kill
        (only while the lock is held)."""
        try:
            for folder in (self.path, self.path / "checkpoints"):
                for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                    if tmp.is_dir() and not tmp.is_symlink():
                        shutil.rmtree(tmp, ignore_errors=True)
                    else:
                        tmp.unlink(missing_ok=True)
        except OSError as e:
            raise DiskError(self.path, e) from None

    def check_new(self, overwrite: bool) -> None:
        """Before any work: refuse an existing non-empty ``--out`` unless ``overwrite`` and it is
        an idle cnnlab run holding only a run's files."""
        try:
            if self.path.exists() and not self.path.is_dir():
                raise CnnlabError(f"--out {str(self.path)!r} is a file, not a folder; choose another --out")
            entries = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        except OSError as e:
            raise CnnlabError(f"--out {str(self.path)!r} cannot be read: {e.strerror}") from None
        if not entries:
            return
        if not overwrite:
            raise CnnlabError(
                f"run folder {str(self.path)!r} already exists; resume it with "
                f"'cnnlab train --resume {self.path}', pick another --out, or add --overwrite"
            )
        if not self.is_run():
            raise CnnlabError(
                f"--overwrite refuses to delete {str(self.path)!r}: it is not a cnnlab run folder (no {MARKER} marker)"
            )
        foreign = [e for e in entries if e not in RUN_ENTRIES and not e.endswith(".tmp")]
        if foreign:
            raise CnnlabError(
                f"--overwrite refuses to delete {str(self.path)!r}: it holds "
                f"{', '.join(map(repr, foreign[:3]))}, which no cnnlab run writes; move it first"
            )
        if self._lock.is_held_elsewhere():
            raise CnnlabError(
                f"--overwrite refuses to delete {str(self.path)!r}: it is in use by "
                f"{self._lock.holder()}; stop that process first"
            )

    def create(self, overwrite: bool = False) -> None:
        """Make the folder (marker first) and hold its lock; an overwritten run's files go only now,
        after the data and model were checked, and only while its lock is held here."""
        self.check_new(overwrite)
        try:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DiskError(self.path, e) from None
        self.lock("overwrite it")
        for entry in self.path.iterdir():  # empty unless overwriting (checked above, now under the lock)
            if entry.name == LOCK:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        (self.path / "checkpoints").mkdir(exist_ok=True)
        atomic_write_json(self.marker, {"format": "cnnlab-run", "version": 1, "created": now()})

    # ------------------------------------------------------------------ status
    def state(self) -> RunState:
        """The run's honest status and its next step, from its files and its lock."""
        info = self.status() if self.run_json.is_file() else {}
        recorded = info.get("status", "new")
        if self.metrics_json.is_file():
            report_missing = info.get("report_wanted", True) and not (self.path / "report.html").is_file()
            return RunState(
                "completed",
                "report not written" if report_missing else "",
                next_step=f"cnnlab report {self.path}" if report_missing else None,
            )
        if self._lock.is_held_elsewhere():
            return RunState("running", holder=self._lock.holder())
        resume = f"cnnlab train --resume {self.path}" if self.last_ckpt.is_file() else None
        restart = "train again with --overwrite (no epoch finished)"
        if recorded == "running":
            return RunState("interrupted", "process gone", next_step=resume or restart)
        if recorded in ("interrupted", "failed"):
            return RunState(recorded, str(info.get("error", ""))[:200], next_step=resume or restart)
        if recorded == "completed":  # run.json says completed but metrics.json is gone
            return RunState("interrupted", "metrics.json missing", next_step=resume or restart)
        return RunState(recorded, next_step=resume or restart)

    def require(self, checkpoint: bool = True) -> RunFolder:
        """Check this is a run folder with a config (and a checkpoint); return self."""
        if not self.path.is_dir():
            raise CnnlabError(f"run folder {str(self.path)!r} does not exist")
        if not self.config.is_file() or not self.run_json.is_file():
            raise CnnlabError(f"{str(self.path)!r} is not a cnnlab run folder (no config.yaml / run.json)")
        if checkpoint and not self.last_ckpt.is_file() and not self.best_ckpt.is_file():
            raise CnnlabError(f"run folder {str(self.path)!r} has no checkpoint yet: its first epoch never finished")
        return self

    # ------------------------------------------------------------------ reads
    def read_config(self) -> Config:
        """The run's resolved config (config.yaml), validated."""

        return build_config(read_yaml_file(self.config, "run config"), source=str(self.config))

    def checkpoint(self, which: str, suffix: str = ".pt") -> Path:
        """Path of checkpoint ``which`` (best or last) with the engine's file suffix."""
        return self.path / "checkpoints" / f"{which}{suffix}"

    def test_split_id(self) -> str:
        """Which test images the run was scored on: a digest of its images' identity (whatever
        their decoding; older runs: the decoded data's fingerprint) and its test indices (two runs
        with the same id were tested on the same images, say a grey 64 px CNN and an RGB 224 px
        pretrained net)."""
        saved = self.read_json(self.split_json)
        indices = saved.get("indices") if isinstance(saved, dict) else None
        test = indices.get("test", []) if isinstance(indices, dict) else None
        if not isinstance(saved.get("fingerprint") if isinstance(saved, dict) else None, str) or not (
            isinstance(test, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in test)
        ):
            raise CnnlabError(f"{self.split_json} is damaged: it needs a fingerprint and lists of image indices")
        which = saved["images"] if isinstance(saved.get("images"), str) else saved["fingerprint"]
        digest = hashlib.sha1(f"{which}|{sorted(test)}".encode()).hexdigest()[:12]
        return f"{digest} ({len(test)} images)"

    def load_predictions(self) -> dict[str, np.ndarray]:
        """predictions.npz (probs, labels, indices of the scored split), read without pickle and checked
        against the run's class count (see :func:`cnnlab.runs.predictions.load_predictions`)."""
        return load_predictions(self.predictions_npz, self._classes())

    def _classes(self) -> int | None:
        """The run's class count from dataset.json (None when it cannot be read)."""
        try:
            return len(self.read_json(self.dataset_json)["classes"])
        except (CnnlabError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------------ writes
    def write_config(self, cfg: Config) -> None:
        atomic_write_text(self.config, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    def write_dataset(
        self, summary: dict[str, Any], fingerprint: str, splits: dict[str, np.ndarray], images: str | None = None
    ) -> None:
        """dataset.json (classes, counts, normalisation) and split.json (exact indices, the
        fingerprint of the decoded data and ``images``: which images, whatever their decoding)."""
        atomic_write_json(self.dataset_json, summary)
        saved: dict[str, Any] = {"fingerprint": fingerprint}
        if images:
            saved["images"] = images
        saved["indices"] = {k: np.asarray(v).tolist() for k, v in splits.items()}
        atomic_write_json(self.split_json, saved)

    def write_history(self, rows: list[dict[str, Any]], first: Sequence[str]) -> None:
        """history.csv: one row per epoch, ``first`` columns first, then any others sorted."""
        extra = sorted({k for row in rows for k in row} - set(first))
        atomic_write_text(self.history_csv, _csv(rows, list(first) + extra))

    def write_steps(self, rows: list[dict[str, Any]]) -> None:
        """steps.csv: training loss/accuracy averaged over every few steps."""
        atomic_write_text(self.steps_csv, _csv(rows, ["step", "epoch", "loss", "acc"]))

    def write_checkpoint(self, which: str, data: bytes, suffix: str = ".pt") -> None:
        """A checkpoint serialised by the engine (torch bytes, or .npz for the NumPy engine)."""
        atomic_write_bytes(self.checkpoint(which, suffix), data)

    def write_leaks(self, leaks: dict[str, Any]) -> None:
        """leaks.json: the validation/test images the leakage guard found to copy training images."""
        atomic_write_json(self.leaks_json, leaks)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json, written last: its presence means the run finished."""
        atomic_write_json(self.metrics_json, metrics)

    def clear_metrics(self) -> None:
        self.metrics_json.unlink(missing_ok=True)

    def save_predictions(self, probs: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        """The evaluated split's probabilities, labels and image indices (for the report)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, probs=probs.astype(np.float32), labels=labels, indices=np.asarray(indices))
        atomic_write_bytes(self.predictions_npz, buf.getvalue())

    def write_text(self, name: str, text: str) -> Path:
        """A text file (e.g. report.html) at ``name`` inside the run."""
        atomic_write_text(self.path / name, text)
        return self.path / name

    @contextlib.contextmanager
    def artifacts(self, name: str, merge: bool = False) -> Iterator[Path]:
        """A scratch folder whose files replace RUN/``name``/ when the block ends without error
        (figures are drawn there, then moved in; a failure leaves the old ones). With ``merge``
        the new files join the folder's existing ones instead."""
        try:
            scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=self.path))
        except OSError as e:
            raise DiskError(self.path / name, e) from None
        try:
            yield scratch
            target = self.path / name
            if merge:
                target.mkdir(exist_ok=True)
                for f in scratch.iterdir():
                    os.replace(f, target / f.name)
                return
            old = self.path / f".{name}.old.tmp"
            if target.exists():
                os.replace(target, old)
            os.replace(scratch, target)
            shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            raise DiskError(self.path / name, e) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def headline_metrics(self) -> dict[str, Any]:
        """The split and the catalogue's headline figures from metrics.json ({} before it exists): what an
        exported model's metadata and a service's /info show of the run."""
        if not self.metrics_json.is_file():
            return {}
        m = self.read_json(self.metrics_json)
        return {k: m[k] for k in ("split", *headline()) if m.get(k) is not None}

    def read_json(self, path: Path) -> Any:
        """A run file's JSON, checked for what cnnlab writes there (run.json, metrics.json,
        dataset.json and split.json hold objects; metrics and splits are checked field by field):
        a damaged file is one line naming it."""
        try:
            if path.stat().st_size > MAX_JSON_BYTES:
                raise damaged(path, f"over {MAX_JSON_BYTES >> 20} MB, where cnnlab writes far less")
            value = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise CnnlabError(f"{path} is missing from the run folder") from None
        except json.JSONDecodeError as e:
            raise CnnlabError(f"{path} is not valid JSON ({e})") from None
        except (UnicodeDecodeError, RecursionError) as e:
            raise damaged(path, "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else "nested too deep") from None
        except OSError as e:
            raise CnnlabError(f"{path} cannot be read ({e.strerror or e})") from None
        if path.name in OBJECT_FILES and path.parent == self.path:
            if not isinstance(value, dict):
                raise damaged(path, f"it holds a {type(value).__name__}, not an object")
            if path.name == "metrics.json":
                _check_metrics(path, value)
            elif path.name == "split.json":
                check_split(path, value)
        return value

    def read_split(self, images: int | None = None) -> dict[str, Any]:
        """split.json, checked (its indices below ``images`` when the data's size is known)."""
        return check_split(self.split_json, self.read_json(self.split_json), images)

    def status(self) -> dict[str, Any]:
        return self.read_json(self.run_json)

    def tracker_path(self, name: str) -> Path:
        """Where experiment tracker ``name`` (tensorboard, mlflow, wandb) writes in this run: the
        trackers write their own formats, only there."""
        path = self.path / TRACKERS[name]
        if name != "mlflow":
            path.mkdir(parents=True, exist_ok=True)
        return path

    def history(self) -> list[dict[str, Any]]:
        """history.csv as one dict per epoch, numbers as floats (empty cells: None); [] when absent."""
        return [{k: _number(v) for k, v in row.items()} for row in read_table(self.history_csv)]

    def update_status(self, **fields: Any) -> None:
        info = self.status() if self.run_json.exists() else {}
        info.update(fields)
        atomic_write_json(self.run_json, info)

    def load_checkpoint(self, which: str = "best") -> dict[str, Any]:
        """Load ``best`` (falling back to ``last``) or ``last`` with ``weights_only``."""
        order = [self.best_ckpt, self.last_ckpt] if which == "best" else [self.last_ckpt]
        for p in order:
            if p.is_file():
                return load_weights_file(p, "checkpoint")
        raise CnnlabError(f"run folder {str(self.path)!r} has no {which} checkpoint")


class NullRunFolder(RunFolder):
    """A writer that writes nothing: for processes that must not touch the run folder
    (non-zero ranks of a distributed run). Reads still work."""

    def lock(self, what: str = "use it") -> RunFolder:
        return self

    def create(self, overwrite: bool = False) -> None: ...
    def update_status(self, **fields: Any) -> None: ...
    def write_config(self, cfg: Config) -> None: ...
    def write_dataset(
        self, summary: dict[str, Any], fingerprint: str, splits: dict[str, np.ndarray], images: str | None = None
    ) -> None: ...
    def write_history(self, rows: list[dict[str, Any]], first: Sequence[str]) -> None: ...
    def write_steps(self, rows: list[dict[str, Any]]) -> None: ...
    def write_checkpoint(self, which: str, data: bytes, suffix: str = ".pt") -> None: ...
    def write_metrics(self, metrics: dict[str, Any]) -> None: ...
    def write_leaks(self, leaks: dict[str, Any]) -> None: ...
    def clear_metrics(self) -> None: ...
    def save_predictions(self, probs: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None: ...

    def write_text(self, name: str, text: str) -> Path:
        return self.path / name

    def tracker_path(self, name: str) -> Path:
        raise CnnlabError("experiment trackers run on the process that writes the run (rank 0) only")

    @contextlib.contextmanager
    def artifacts(self, name: str, merge: bool = False) -> Iterator[Path]:
        with tempfile.TemporaryDirectory() as scratch:
            yield Path(scratch)
