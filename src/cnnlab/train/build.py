"""From a config to a ready model and optimizer: options, pretrained weights, freeze policy,
LR groups, and the feature cache for frozen backbones."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..models.factory import create_model, get_spec
from ..models.pretrained import load_matching, load_state_file
from ..models.transfer import apply_freeze, output_layer, without_output_layer
from .trainer import Trainer, predict_logits

log = logging.getLogger(__name__)


def build_model(cfg: Config, num_classes: int, in_chans: int, input_size: int, for_inference: bool = False
                ) -> nn.Module:
    """The configured model; for training also its starting weights and freeze policy.

    With ``for_inference`` (loading a checkpoint) no pretrained weights are fetched: the
    checkpoint overwrites them anyway, and this keeps evaluation offline.
    """
    m = cfg.model
    spec = get_spec(m.name)
    opts: dict[str, Any] = {"hidden": m.hidden, "dropout": m.dropout, "activation": m.activation, "init": m.init,
                            "batch_norm": m.batch_norm, **m.options}
    takes_weights = "weights" in spec.options()
    if "pretrained" in spec.options():
        opts["pretrained"] = m.pretrained and not for_inference
    if takes_weights and not for_inference:
        opts["weights"] = m.weights
    model = create_model(m.name, num_classes=num_classes, in_chans=in_chans, input_size=input_size, **opts)
    if for_inference:
        return model
    if m.weights and not takes_weights:
        load_matching(model, load_state_file(m.weights), f"model.weights {m.weights!r}")
    apply_freeze(model, "backbone" if m.fine_tune else m.freeze, m.unfreeze_last, m.train_bn_only)
    return model


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
