"""Shared by training and evaluation: batches of a split, and a run's own data."""

from __future__ import annotations

import logging
from typing import Any

import torch

from .config import Config
from .data import PreparedData, prepare_data
from .data.loaders import TensorBatches, make_batches
from .models import get_spec
from .predict import resolve_device
from .runs.store import RunFolder

__all__ = ["load_run_data", "resolve_device", "split_loader"]

log = logging.getLogger(__name__)


def split_loader(data: PreparedData, split: str, batch_size: int, device: torch.device, **kwargs: Any
                 ) -> TensorBatches:
    """Batches of one split of ``data``, normalised as the data says (kwargs: shuffle, transforms...)."""
    return make_batches(data.images, data.labels, data.splits[split], batch_size, data.mean, data.std,
                        device=device, normalize=data.normalize, **kwargs)


def load_run_data(run: RunFolder, cfg: Config, progress: bool) -> PreparedData:
    """The run's own data with its exact saved split; refuses data that changed since."""
    saved = run.read_json(run.split_json)
    return prepare_data(cfg.data, get_spec(cfg.model.name), cfg.train.seed, splits=saved["indices"],
                        expect_fingerprint=saved["fingerprint"], progress=progress)
