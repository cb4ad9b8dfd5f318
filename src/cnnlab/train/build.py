"""From a config to a ready model and optimizer: options, pretrained weights, freeze policy,
LR groups, and the feature cache for frozen backbones."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.checkpoints import atomic_torch_save, load_weights_file
from cnnlab.core.atomic import atomic_write_json
from cnnlab.core.errors import CnnlabError
from cnnlab.core.locations import cache_dir
from cnnlab.core.schema import Config
from cnnlab.models.build import build_model
from cnnlab.models.factory import get_spec
from cnnlab.models.ops import predict_logits
from cnnlab.models.transfer import head_block, without_output_layer
from cnnlab.train.trainer import Trainer

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
        raise CnnlabError(
            f"model {cfg.model.name!r} with this config has {n:,} parameters: training needs about "
            f"{need / 2**30:,.1f} GiB (weights, gradients, optimizer state) but {avail / 2**30:,.1f} "
            "GiB is available; choose smaller layers (--hidden) or a smaller --input-size"
        )
    return n


# Backbone LR of --fine-tune auto, × the head's. Measured on Fashion-MNIST, 100 images per class at
# 112 px, phases 10,4, full test set: 0.1 → 0.8503, 0.3 → 0.8561, 0.5 → 0.8605 (frozen head 0.8374).
AUTO_BACKBONE_LR_MULT = 0.5


def resolve_fine_tune(cfg: Config, n_train: int) -> Config:
    """``--fine-tune auto`` → phase lengths and the backbone's LR. With ``--epochs T``: a third of them
    unfrozen (at least one), the rest on cached features. Otherwise 10 head epochs (seconds, on
    cached features) and 4, 3 or 2 unfrozen epochs for up to 2,000, 20,000 or more training
    images; the backbone at ``AUTO_BACKBONE_LR_MULT`` × the LR unless ``--backbone-lr-mult`` is given."""
    if cfg.model.fine_tune != "auto":
        return cfg
    if "epochs" in cfg.train.model_fields_set:
        e2 = max(1, round(cfg.train.epochs / 3))
        e1 = cfg.train.epochs - e2
    else:
        e1, e2 = 10, 4 if n_train <= 2000 else 3 if n_train <= 20000 else 2
    mult = cfg.model.backbone_lr_mult or AUTO_BACKBONE_LR_MULT
    log.info(
        "fine-tune auto: %d epochs of the head on cached features, then %d with the backbone training at %g × the LR",
        e1,
        e2,
        mult,
    )
    return cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"fine_tune": (e1, e2), "backbone_lr_mult": mult}),
            "train": cfg.train.model_copy(update={"epochs": e1 + e2}),
        }
    )


# cnnlab's own recipe for a net trained from scratch when the config leaves it open (no schedule, LR or
# epochs given): one cycle of about DEFAULT_STEPS optimizer steps (or the net's own measured
# ``recipe_steps``) peaking at DEFAULT_PEAK_LR, in whole epochs within DEFAULT_EPOCHS. Measured on
# Fashion-MNIST `cnn` (benchmarks/race.py): 3 one-cycle epochs at 3e-3 reach 90 % test accuracy in
# ~0.8× the time of constant 1e-3, which needed 4-5 epochs; `cnn-bn` reaches it in a 2-epoch cycle.
DEFAULT_STEPS = 1200
DEFAULT_EPOCHS = (2, 30)
DEFAULT_PEAK_LR = 3e-3


def resolve_recipe(cfg: Config, n_train: int, engine_schedules: bool = True) -> Config:
    """The default recipe, only where the user's config is silent: a net built from scratch by an
    engine with LR schedules, no --schedule given → one-cycle, its peak at ``DEFAULT_PEAK_LR`` unless
    --lr is given, over enough epochs for ~``DEFAULT_STEPS`` steps (``DEFAULT_EPOCHS`` bounds) unless
    --epochs is given. Pretrained models, fine-tuning and a chosen schedule keep the plain defaults
    (constant LR, 10 epochs). The resolved values go into the run's config.yaml."""

    tc = cfg.train
    if (
        "schedule" in tc.model_fields_set
        or not engine_schedules
        or cfg.model.fine_tune
        or get_spec(cfg.model.name).pretrained
    ):
        return cfg
    epochs = tc.epochs
    if "epochs" not in tc.model_fields_set:
        steps = max(1, -(-n_train // tc.step_batch))
        cycle = get_spec(cfg.model.name).recipe_steps or DEFAULT_STEPS
        epochs = min(max(round(cycle / steps), DEFAULT_EPOCHS[0]), DEFAULT_EPOCHS[1])
    lr = cfg.optim.lr if "lr" in cfg.optim.model_fields_set else DEFAULT_PEAK_LR
    log.info(
        "default recipe: one-cycle over %d epochs (%d steps) peaking at LR %g; --schedule, --epochs and "
        "--lr choose your own",
        epochs,
        epochs * max(1, -(-n_train // tc.step_batch)),
        lr,
    )
    return cfg.model_copy(
        update={
            "train": tc.model_copy(update={"schedule": "onecycle", "epochs": epochs}),
            "optim": cfg.optim.model_copy(update={"lr": lr}),
        }
    )


def resolve_periods(cfg: Config, n_train: int) -> Config:
    """``train.evals_per_epoch`` K > 1 as training by steps: an epoch's steps in K periods (fewer
    when an epoch has fewer steps), each the loop's "epoch" (validated, checkpointed, a history
    row, a sweep's pruning rung); options counted in epochs count periods (×K; exp-decay's rate per
    period ÷K), so the run follows the same LR and patience as by epochs. The resolved config says
    steps and eval_every (a resumed run continues by them)."""
    tc = cfg.train
    if tc.evals_per_epoch == 1 or tc.steps is not None:
        return cfg
    per_epoch = max(1, -(-n_train // tc.step_batch))
    k = min(tc.evals_per_epoch, per_epoch)
    every = per_epoch // k
    scaled = {f: getattr(tc, f) * k for f in ("patience", "warmup_epochs", "step_size", "plateau_patience",
                                              "decay_start") if getattr(tc, f) is not None}  # fmt: skip
    log.info(
        "validating %d times an epoch: %d periods of %d steps (%d epochs of %d steps)",
        k, tc.epochs * k, every, tc.epochs, per_epoch,
    )  # fmt: skip
    update = dict(scaled, steps=tc.epochs * k * every, eval_every=every, epochs=tc.epochs * k, evals_per_epoch=1)
    if tc.schedule == "exp-decay":
        update["decay_rate"] = tc.decay_rate / k
    return cfg.model_copy(update={"train": tc.model_copy(update=update)})


def backbone_lr_mult(cfg: Config) -> float:
    m = cfg.model
    if m.backbone_lr_mult is not None:
        return m.backbone_lr_mult
    return 0.1 if (m.fine_tune or m.unfreeze_last) else 1.0


def param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Head and backbone parameter groups; the backbone's LR is scaled by ``backbone_lr_mult``.
    Frozen parameters stay out, except when fine-tuning will unfreeze them later."""
    head_ids = {id(p) for p in head_block(model).parameters()}
    keep_frozen = cfg.model.fine_tune is not None
    head = [p for p in model.parameters() if id(p) in head_ids]
    backbone = [p for p in model.parameters() if id(p) not in head_ids and (p.requires_grad or keep_frozen)]
    groups = [{"params": head, "lr": cfg.optim.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.optim.lr * backbone_lr_mult(cfg)})
    return groups


def uses_feature_cache(cfg: Config) -> bool:
    """A frozen backbone sees the same images every epoch when nothing augments them: its
    features can be computed once and only the head trained on them. The frozen phase of
    ``--fine-tune`` trains on them too (augmentation, if any, applies once the backbone trains)."""
    m, d = cfg.model, cfg.data
    if not cfg.train.feature_cache or m.unfreeze_last is not None or m.train_bn_only:
        return False
    if m.fine_tune is not None:
        return not (d.random_erasing or d.mixup or d.cutmix)
    return m.freeze == "backbone" and d.augment == "none" and not (d.random_erasing or d.mixup or d.cutmix)


@torch.no_grad()
def extract_features(model: nn.Module, batches: Any, progress: bool = False, what: str = "") -> torch.Tensor:
    """Backbone features: the model with its head (:func:`head_block`) replaced by identity, in eval mode."""
    from tqdm.auto import tqdm

    with without_output_layer(model, block=True):
        feats, _ = predict_logits(
            model, tqdm(batches, desc=f"backbone features{what}", unit="batch", disable=not progress, leave=False)
        )
    return feats


class HeadOnlyTrainer(Trainer):
    """Trains the head on cached backbone features; checkpoints hold the whole model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_block(self.model)(x)


def feature_key(model: nn.Module, parts: dict[str, Any]) -> str:
    """What cached features depend on: the backbone's weights (hashed), and ``parts``
    (preprocessing, the data fingerprint, the split's indices)."""
    head = {id(p) for p in head_block(model).parameters()}
    h = hashlib.blake2b(digest_size=12)
    for name, p in model.named_parameters():
        if id(p) not in head:
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    for name, b in model.named_buffers():
        h.update(name.encode())
        h.update(b.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()


def feature_sets(
    model: nn.Module, loader_for: Any, splits: dict[str, np.ndarray], key_parts: dict[str, Any], progress: bool = False
) -> tuple[torch.Tensor, dict[str, np.ndarray], dict[str, Any]]:
    """Features of the train and val images, their positions per split, and facts for run.json
    (seconds, whether they came from the persistent cache under ~/.cache/cnnlab/features)."""

    started = time.perf_counter()
    positions, offset = {}, 0
    for split in ("train", "val"):
        positions[split] = np.arange(offset, offset + len(splits[split]))
        offset += len(splits[split])
    key = feature_key(model, {**key_parts, "indices": [np.asarray(splits[s]).tolist() for s in ("train", "val")]})
    entry = cache_dir() / "features" / key
    if (entry / "features.pt").is_file():
        try:
            feats = load_weights_file(entry / "features.pt", "feature cache")
            if isinstance(feats, torch.Tensor) and len(feats) == offset:
                log.info("feature cache hit: %s (%d features)", entry, len(feats))
                return (
                    feats,
                    positions,
                    {"seconds": round(time.perf_counter() - started, 2), "reused": True, "entry": str(entry)},
                )
        except Exception as e:  # a damaged entry is computed again
            log.warning("feature cache entry %s is damaged (%s): computing the features again", entry, e)
    parts = [extract_features(model, loader_for(s), progress, f" ({s})") for s in ("train", "val") if len(splits[s])]
    feats = torch.cat(parts)
    try:
        entry.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(entry / "features.pt", feats)
        atomic_write_json(
            entry / "meta.json",
            {
                "images": int(len(feats)),
                "dim": int(feats.shape[1]),
                "created": time.time(),
                **{k: str(v) for k, v in key_parts.items() if k != "fingerprint"},
            },
        )
    except OSError as e:  # the run works without a persistent copy
        log.warning("could not keep the features in %s (%s)", entry, e)
    return feats, positions, {"seconds": round(time.perf_counter() - started, 2), "reused": False, "entry": str(entry)}
