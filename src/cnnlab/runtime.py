"""Shared by training and evaluation: devices, loaders, and loading a run's data and model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, build_config
from .data import PreparedData, prepare_data
from .data.images import decode_file
from .data.loaders import TensorBatches
from .errors import CnnlabError
from .runs.store import RunFolder
from .train.build import build_model
from .train.losses import task_for
from .train.trainer import predict_logits, uses_conv

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when present, else mps, else cpu; an unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnlabError(f"train.device {name!r}: no CUDA device is available here; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CnnlabError("train.device 'mps': no Apple GPU is available here; use --device cpu or auto")
    return torch.device(name)


def split_loader(data: PreparedData, split: str, batch_size: int, device: torch.device, **kwargs: Any
                 ) -> TensorBatches:
    """Batches of one split of ``data``, normalised as the data says (kwargs: shuffle, transforms...)."""
    return TensorBatches(data.images, data.labels, data.splits[split], batch_size, data.mean, data.std,
                         device=device, normalize=data.normalize, **kwargs)


def load_run_data(run: RunFolder, cfg: Config, progress: bool) -> PreparedData:
    """The run's own data with its exact saved split; refuses data that changed since."""
    saved = run.read_json(run.split_json)
    return prepare_data(cfg.data, cfg.model.name, cfg.train.seed, splits=saved["indices"],
                        expect_fingerprint=saved["fingerprint"], progress=progress)


def warn_if_incomplete(run: RunFolder) -> None:
    """Say so when a run is read before it finished: its best checkpoint is only the best so far."""
    status = run.status().get("status")
    if status != "completed":
        log.warning("run %s is %s, not completed: using its best checkpoint so far (epoch %s); "
                    "finish it with: cnnlab train --resume %s", run.path, status,
                    run.load_checkpoint("best").get("epoch"), run.path)


def load_model(ckpt: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The checkpoint's model with its weights, on ``device``, in eval mode (no pretrained download)."""
    cfg = build_config(ckpt["config"])
    pre = ckpt["preprocess"]
    model = build_model(cfg, len(ckpt["classes"]), pre["channels"], pre["input_size"], for_inference=True)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def predict_probs(model: torch.nn.Module, batches: TensorBatches, multilabel: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (softmax, or sigmoid for multi-label) and labels over ``batches``."""
    logits, y = predict_logits(model, batches)
    return task_for(multilabel).probs(logits).numpy(), y.numpy()


def checkpoint_loader(ckpt: dict[str, Any], model: torch.nn.Module, images: Any, labels: torch.Tensor,
                      indices: np.ndarray, batch_size: int, device: torch.device) -> TensorBatches:
    """Batches preprocessed exactly as the checkpoint's training data was."""
    pre = ckpt["preprocess"]
    return TensorBatches(images, labels, indices, batch_size, pre["mean"], pre["std"], device=device,
                         normalize=pre["normalize"], channels_last=uses_conv(model))


def decode_each(ckpt: dict[str, Any], paths: Any) -> list[tuple[str, Any, Any]]:
    """(path, array or None, reason or None) per file, decoded with :func:`decode_for`; one
    unreadable file does not stop the others."""
    from .data.images import describe_error

    out = []
    for p in paths:
        try:
            out.append((str(p), decode_for(ckpt, p), None))
        except Exception as e:  # reported per file
            out.append((str(p), None, describe_error(e)))
    return out


def decode_for(ckpt: dict[str, Any], path: str | Path) -> np.ndarray:
    """One image file decoded exactly as the checkpoint's training images were (size, channels,
    pixel budget, resize filter). Raises what decoding raises; callers report it per file."""
    pre = ckpt["preprocess"]
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    return decode_file(path, pre["channels"], pre["input_size"], ckpt["config"]["data"]["max_pixels"],
                       pre["interpolation"])[0]
