"""Checkpoint formats and their safe loading: torch files read with ``weights_only`` (tensors and
plain data, never code), NumPy-engine ``.npz`` files without pickle, atomic saves. Below both
``models`` (weights files) and ``runs`` (a run's checkpoints)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.atomic import atomic_write_bytes
from cnnlab.core.errors import CnnlabError

__all__ = ["atomic_torch_save", "load_weights_file", "npz_checkpoint_bytes"]


def atomic_torch_save(path: Path, obj: Any) -> None:
    """Atomically ``torch.save`` ``obj``. It is serialised in memory first, so that a full disk
    shows as an OSError of the write (torch's own writer reports it as an opaque RuntimeError)."""
    import torch  # here, not at the top: reading a run folder's files (the board) needs no PyTorch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getbuffer())


def npz_checkpoint_bytes(obj: dict[str, Any]) -> bytes:
    """A NumPy-engine checkpoint as .npz bytes: ``model/NAME`` and ``optimizer/NAME`` arrays,
    everything else as one JSON record ``meta`` (no pickle anywhere)."""
    arrays = {f"model/{k}": np.asarray(v) for k, v in obj.get("model", {}).items()}
    arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in obj.get("optimizer", {}).items()})
    meta = {k: v for k, v in obj.items() if k not in ("model", "optimizer")}
    arrays["meta"] = np.asarray(json.dumps(meta, default=_plain))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return buf.getvalue()


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} cannot go into a checkpoint")


def load_weights_file(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never code; one-line errors.
    A NumPy-engine ``.npz`` checkpoint is read with ``allow_pickle=False``."""
    if Path(path).suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                out: dict[str, Any] = json.loads(str(z["meta"]))
                out["model"] = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("model/")}
                opt = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("optimizer/")}
                if opt:
                    out["optimizer"] = opt
            return out
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CnnlabError(f"{what} {path} cannot be read ({type(e).__name__}: {first})") from None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CnnlabError(
            f"{what} {path} was refused: it holds Python objects other than tensors and plain "
            "data, and loading those could run code"
        ) from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CnnlabError(f"{what} {path} cannot be read ({type(e).__name__}: {first})") from None
