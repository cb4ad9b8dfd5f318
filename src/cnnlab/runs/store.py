"""The run folder: its layout, atomic writes, status, and reading a run back."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..errors import CnnlabError

# A run folder:
#   config.yaml         the resolved config
#   run.json            status (running / interrupted / failed / completed), times, versions, params
#   dataset.json        classes, split sizes, class counts, normalisation, skipped files
#   split.json          exact indices of every split and the data fingerprint
#   history.csv         one row per epoch
#   checkpoints/last.pt full training state (resume); checkpoints/best.pt best weights
#   metrics.json        test-set evaluation of best.pt (written last: its presence means done)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Any, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    _atomic_write(Path(path), lambda f: f.write(text), "w")


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(Path(path), json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    """Atomically ``torch.save`` ``obj``."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f), "wb")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """Paths and small read/write helpers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    run_json = property(lambda self: self.path / "run.json")
    dataset_json = property(lambda self: self.path / "dataset.json")
    split_json = property(lambda self: self.path / "split.json")
    history_csv = property(lambda self: self.path / "history.csv")
    metrics_json = property(lambda self: self.path / "metrics.json")
    last_ckpt = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_ckpt = property(lambda self: self.path / "checkpoints" / "best.pt")

    def create(self, overwrite: bool = False) -> None:
        """Make the folder; refuse a non-empty one unless ``overwrite``."""
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise CnnlabError(
                    f"run folder {str(self.path)!r} already exists; resume it with "
                    f"'cnnlab train --resume {self.path}', pick another --out, or add --overwrite"
                )
            if not self.run_json.exists():
                raise CnnlabError(f"--overwrite refuses to delete {str(self.path)!r}: it is not a cnnlab run folder")
            shutil.rmtree(self.path)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)

    def require(self) -> "RunFolder":
        """Check this is a run folder with a config and a checkpoint; return self."""
        if not self.path.is_dir():
            raise CnnlabError(f"run folder {str(self.path)!r} does not exist")
        if not self.config.is_file() or not self.run_json.is_file():
            raise CnnlabError(f"{str(self.path)!r} is not a cnnlab run folder (no config.yaml / run.json)")
        if not self.last_ckpt.is_file() and not self.best_ckpt.is_file():
            raise CnnlabError(f"run folder {str(self.path)!r} has no checkpoint yet: its first epoch never finished")
        return self

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise CnnlabError(f"{path} is missing from the run folder") from None
        except json.JSONDecodeError as e:
            raise CnnlabError(f"{path} is not valid JSON ({e})") from None

    def status(self) -> dict[str, Any]:
        return self.read_json(self.run_json)

    def update_status(self, **fields: Any) -> None:
        info = self.status() if self.run_json.exists() else {}
        info.update(fields)
        atomic_write_json(self.run_json, info)

    def load_checkpoint(self, which: str = "best") -> dict[str, Any]:
        """Load ``best`` (falling back to ``last``) or ``last`` with ``weights_only``."""
        order = [self.best_ckpt, self.last_ckpt] if which == "best" else [self.last_ckpt]
        for p in order:
            if p.is_file():
                try:
                    return torch.load(p, map_location="cpu", weights_only=True)
                except Exception as e:
                    raise CnnlabError(f"checkpoint {p} cannot be read ({type(e).__name__}: {e})") from None
        raise CnnlabError(f"run folder {str(self.path)!r} has no {which} checkpoint")
