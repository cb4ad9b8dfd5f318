"""From a config to a ready model and optimizer: options, pretrained weights, freeze policy,
LR groups, and the feature cache for frozen backbones."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..errors import CnnlabError
from ..models.build import build_model
from ..models.transfer import output_layer, without_output_layer
from ..predict import predict_logits
from .trainer import Trainer

log = logging.getLogger(__name__)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable; free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_model_fits(cfg: Config, num_classes: int, in_chans: int, input_size: int) -> int:
    """Refuse, before any allocation, a model whose training state would not fit in memory.

    The model is built on PyTorch's ``meta`` device (shapes only, no storage) and its
    parameters counted; training holds about four float32 copies of them (weights,
    gradients, two Adam moments). Returns the parameter count.
    """
    with torch.device("meta"):
        model = build_model(cfg, num_classes, in_chans, input_size, for_inference=True)
    n = sum(p.numel() for p in model.parameters())
    need, avail = n * 4 * 4, available_memory()
    if need > avail:
        raise CnnlabError(f"model {cfg.model.name!r} with this config has {n:,} parameters: training needs about "
                          f"{need / 2**30:,.1f} GiB (weights, gradients, optimizer state) but {avail / 2**30:,.1f} "
                          "GiB is available; choose smaller layers (--hidden) or a smaller --input-size")
    return n


def backbone_lr_mult(cfg: Config) -> float:
    m = cfg.model
    if m.backbone_lr_mult is not None:
        return m.backbone_lr_mult
    return 0.1 if (m.fine_tune or m.unfreeze_last) else 1.0


def param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Head and backbone parameter groups; the backbone's LR is scaled by ``backbone_lr_mult``.
    Frozen parameters stay out, except when fine-tuning will unfreeze them later."""
    head_ids = {id(p) for p in output_layer(model).parameters()}
    keep_frozen = cfg.model.fine_tune is not None
    head = [p for p in model.parameters() if id(p) in head_ids]
    backbone = [p for p in model.parameters() if id(p) not in head_ids and (p.requires_grad or keep_frozen)]
    groups = [{"params": head, "lr": cfg.optim.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.optim.lr * backbone_lr_mult(cfg)})
    return groups


def uses_feature_cache(cfg: Config) -> bool:
    """A frozen backbone sees the same images every epoch when nothing augments them: its
    features can be computed once and only the head trained on them."""
    m, d = cfg.model, cfg.data
    return (cfg.train.feature_cache and m.freeze == "backbone" and m.unfreeze_last is None and not m.train_bn_only
            and m.fine_tune is None and d.augment == "none" and not (d.random_erasing or d.mixup or d.cutmix))


@torch.no_grad()
def extract_features(model: nn.Module, batches: Any) -> torch.Tensor:
    """Pre-logit features: the model with its output layer replaced by identity, in eval mode."""
    with without_output_layer(model):
        feats, _ = predict_logits(model, batches)
    return feats


class HeadOnlyTrainer(Trainer):
    """Trains the output layer on cached backbone features; checkpoints hold the whole model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return output_layer(self.model)(x)


def feature_sets(model: nn.Module, loader_for: Any, splits: dict[str, np.ndarray]
                 ) -> tuple[torch.Tensor, dict[str, np.ndarray], float]:
    """Features of the train and val images, their positions per split, and the seconds taken."""
    started = time.perf_counter()
    parts, positions, offset = [], {}, 0
    for split in ("train", "val"):
        idx = splits[split]
        if len(idx):
            parts.append(extract_features(model, loader_for(split)))
        positions[split] = np.arange(offset, offset + len(idx))
        offset += len(idx)
    return torch.cat(parts), positions, time.perf_counter() - started
