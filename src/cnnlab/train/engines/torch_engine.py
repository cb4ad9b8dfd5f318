"""The ``torch`` engine: it builds the model, optimizer, loaders and its own callbacks, runs the one
epoch loop (train/loop.py) through its Trainer's steps, exposes its state for checkpoints and
serialises them. ``workflows/training.py`` opens and finishes a run without knowing which engine ran;
the NumPy engine (engines/scratch_engine.py) registers beside it."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cnnlab.checkpoints import load_weights_file
from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import Config
from cnnlab.data.loaders import TensorBatches, split_loader
from cnnlab.data.pipeline import PreparedData
from cnnlab.data.transforms import build_batch_transform, build_transform
from cnnlab.evaluate.metrics import compute_metrics
from cnnlab.models import count_parameters
from cnnlab.models.ops import activation_bytes, uses_conv
from cnnlab.models.transfer import apply_freeze
from cnnlab.train import distributed
from cnnlab.train.build import HeadOnlyTrainer, build_model, feature_sets, param_groups, uses_feature_cache
from cnnlab.train.callbacks import Callback, FineTune, LRSchedule
from cnnlab.train.ema import WeightEMA
from cnnlab.train.engines.base import ENGINES
from cnnlab.train.losses import MultiLabel, SingleLabel, balanced_class_weights, init_output_bias
from cnnlab.train.optim import build_optimizer, build_schedule
from cnnlab.train.threads import ThreadPolicy
from cnnlab.train.trainer import Trainer, autocast_dtype, seed_everything

log = logging.getLogger(__name__)


def task_for_config(data: PreparedData, cfg: Config) -> SingleLabel | MultiLabel:
    """Loss, accuracy and probabilities for the data's kind, with class weights and label
    smoothing when asked."""
    if data.multilabel:
        for asked, what in ((cfg.train.class_weights == "auto", "train.class_weights 'auto'"),
                            (cfg.train.label_smoothing > 0, "train.label_smoothing")):  # fmt: skip
            if asked:
                raise CnnlabError(f"{what} is for single-label data; this dataset is multi-label")
        return MultiLabel()
    weight = balanced_class_weights(data.class_counts("train")) if cfg.train.class_weights == "auto" else None
    return SingleLabel(weight, cfg.train.label_smoothing)


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def train_loader(data: PreparedData, cfg: Config, device: torch.device, model: torch.nn.Module) -> TensorBatches:
    """Training batches: seeded order, the augmentation preset per image, batch-level augmentation."""
    d = cfg.data
    train_idx = data.splits["train"]

    def sample() -> torch.Tensor:  # gathered only for presets that need pixel statistics
        return data.images[torch.as_tensor(train_idx[:: max(1, len(train_idx) // 2000)][:2000])]

    transform = build_transform(d.augment, data.input_size, data.channels, d.augment_options, images=sample)
    batch_tf = build_batch_transform(
        d.random_erasing, d.mixup, d.cutmix, len(data.classes), device, multilabel=data.multilabel
    )
    return split_loader(
        data,
        "train",
        cfg.train.step_batch,  # with train.accumulate N: N passes of batch_size make one step
        device,
        shuffle=True,
        seed=cfg.train.seed,
        transform=transform,
        sampler=d.sampler,
        batch_transform=batch_tf,
        channels_last=uses_conv(model),
        drop_single=has_batch_norm(model),
        rank=distributed.rank(),
        world=distributed.world_size(),
        workers=d.workers,
    )


def on_device(data: PreparedData, device: torch.device) -> PreparedData:
    """On a GPU, the data with its decoded uint8 images copied to GPU memory once, when they take
    under a quarter of what is free: training batches are then gathered there, with no copy per
    step. Elsewhere (or when they do not fit) the data as it is."""
    if device.type != "cuda" or not isinstance(data.images, torch.Tensor) or data.images.device == device:
        return data
    free, _ = torch.cuda.mem_get_info(device)
    size = data.images.numel() * data.images.element_size()
    if size >= free // 4:
        return data
    log.info("keeping the %.0f MB of decoded images in GPU memory for training", size / 2**20)
    return dataclasses.replace(data, images=data.images.to(device))


ACTIVATION_BUDGET = 1.5 * 2**30  # bytes of activations one forward/backward pass may hold (auto slices)
# On a CPU, smaller passes are also faster where their activations stay near the cache: measured at
# one thread on a 32 MB-L3 EPYC, `triple` at 64 px (2 MB an image) trained 97 img/s in passes of
# 128 and 137 in passes of 32; Lite0 at 224 px 2x faster in passes of 16 than of 128. Passes of at
# least CPU_MIN_PASS images (what Lite0's memory budget gives; smaller training passes were not
# measured), else up to ~80 MB of activations, the
# batch split evenly (128 images of `triple` in 4 passes of 32, not 3 of 39 and one of 11).
CPU_ACTIVATION_BUDGET, CPU_MIN_PASS = 80 * 2**20, 16


def micro_batch(
    cfg: Config, model: torch.nn.Module, channels: int, size: int, bn_kept: bool, on_cpu: bool = False
) -> int | None:
    """Images per forward/backward pass (``train.micro_batch``), None for the whole batch.

    By default a batch whose activations (:func:`activation_bytes`) would pass ACTIVATION_BUDGET
    (``on_cpu``: CPU_ACTIVATION_BUDGET, in passes of at least CPU_MIN_PASS) goes through in slices
    — Lite0 fine-tuned at 224 px in batches of 128 peaked at 11.7 GB RSS — but only where no layer
    mixes the images of a pass (BatchNorm kept in eval mode, as fine-tuning does, or absent), so
    the step is the same step."""
    bs, asked = cfg.train.step_batch, cfg.train.micro_batch
    mixes = has_batch_norm(model) and not bn_kept
    if cfg.train.accumulate > 1:  # passes of batch_size (fewer where activations would not fit)
        fit = max(1, int(ACTIVATION_BUDGET // max(activation_bytes(model, channels, size), 1)))
        return cfg.train.batch_size if mixes else min(cfg.train.batch_size, fit)
    if asked is not None:
        if mixes and asked < bs:
            raise CnnlabError(
                f"train.micro_batch {asked} below train.batch_size {bs}: this model's BatchNorm layers "
                "normalise over the images of a pass, so slices would change its arithmetic; lower "
                "train.batch_size instead"
            )
        return asked if asked < bs else None
    if mixes:
        return None
    per_image = max(activation_bytes(model, channels, size), 1)
    fit = max(1, int(ACTIVATION_BUDGET // per_image))
    if on_cpu:
        fit = min(fit, max(CPU_MIN_PASS, int(CPU_ACTIVATION_BUDGET // per_image)))
        fit = -(-bs // -(-bs // fit))  # the same passes, of even size
    return fit if fit < bs else None


def fine_tune_phases(cfg: Config) -> tuple[int, int] | None:
    """``model.fine_tune`` as (frozen epochs, unfrozen epochs), once resolved; None without it."""
    ft = cfg.model.fine_tune
    if ft is None or isinstance(ft, str):  # "auto" is resolved before an engine is built
        return None
    return int(ft[0]), int(ft[1])


def fine_tune_schedule(optimizer: torch.optim.Optimizer, head_steps: int, tune_steps: int, warmup: int) -> Any:
    """Per-step LR factors of the fine-tuning recipe: 1 while the head trains alone, then a
    linear warm-up over ``warmup`` steps and a cosine decay to 0 over the unfrozen phase."""

    def factor(step: int) -> float:
        if step < head_steps:
            return 1.0
        t = step - head_steps
        if t < warmup:
            return (t + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warmup) / max(1, tune_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def checkpoint_bytes(obj: dict[str, Any]) -> bytes:
    """A checkpoint as ``torch.save`` bytes (loadable with ``weights_only=True``)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load_torch_checkpoint(path: Path) -> dict[str, Any]:
    """A torch checkpoint, tensors and plain data only."""

    return load_weights_file(path, "checkpoint")


@ENGINES.register("torch")
class TorchEngine:
    """PyTorch (CPU, CUDA or MPS): registry models, optimizers and schedules, the Trainer loop.

    With a frozen backbone and no augmentation the head trains on cached backbone features.
    """

    name = "torch"
    schedules = True  # LR schedules (the default one-cycle recipe needs them)
    checkpoint_suffix = ".pt"
    load_checkpoint = staticmethod(load_torch_checkpoint)

    def __init__(self, cfg: Config, data: PreparedData, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        if distributed.world_size() > 1 and (uses_feature_cache(cfg) or cfg.model.fine_tune):
            raise CnnlabError(
                "torchrun trains whole models; a frozen backbone (feature cache) or --fine-tune runs in one process"
            )
        if cfg.train.accumulate > 1 and (distributed.world_size() > 1 or cfg.train.precision == "fp16"):
            raise CnnlabError(
                "train.accumulate runs in one process without fp16's gradient scaler; under torchrun give "
                "each process a larger train.batch_size, or use --precision bf16"
            )
        seed_everything(cfg.train.seed)
        self.model = build_model(cfg, len(data.classes), data.channels, data.input_size)
        # decided (and a refused train.micro_batch refused) here, before any run folder is made
        self.trains_images = bool(cfg.model.fine_tune) or not uses_feature_cache(cfg)  # not only cached features
        self.micro_batch = (
            micro_batch(
                cfg, self.model, data.channels, data.input_size, bool(cfg.model.fine_tune), device.type == "cpu"
            )
            if self.trains_images
            else None
        )
        self.trainer: Trainer | None = None
        self.train_batches: Any = None
        self.val_batches: Any = None
        self.extra_callbacks: list[Callback] = []
        self._resume_state: dict[str, Any] | None = None
        self.head_phase: tuple[Trainer, Any, Any] | None = None  # --fine-tune: head on cached features
        self.progress = False

    def parameters(self) -> dict[str, Any]:
        """Total/trainable/frozen counts as built; with ``--fine-tune`` also per phase."""
        counts: dict[str, Any] = count_parameters(self.model)
        ft = fine_tune_phases(self.cfg)
        if ft:
            apply_freeze(self.model, "none")
            unfrozen = count_parameters(self.model)
            apply_freeze(self.model, "backbone")
            counts["phases"] = [
                {"epochs": f"1-{ft[0]}", "trainable": counts["trainable"], "frozen": counts["frozen"]},
                {
                    "epochs": f"{ft[0] + 1}-{ft[0] + ft[1]}",
                    "trainable": unfrozen["trainable"],
                    "frozen": unfrozen["frozen"],
                },
            ]
        return counts

    # --------------------------------------------------------------- preparation
    def prepare(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """Optimizer, schedule, batches (feature cache when it applies); resume ``state``.

        With ``--fine-tune E1,E2`` there are two trainers over the same model and optimizer:
        the head on cached backbone features for epochs 1..E1, then the whole model on
        (augmented) images for the rest, its BatchNorm statistics kept from pretraining.

        Returns:
            Facts for run.json (e.g. the feature cache's size and seconds).
        """
        cfg, data, model = self.cfg, self.data, self.model
        if cfg.train.init_output_bias and state is None:
            init_output_bias(
                model, data.class_counts("train"), num_images=len(data.splits["train"]) if data.multilabel else None
            )
        model.to(self.device)
        optimizer = build_optimizer(
            cfg.optim.name,
            param_groups(model, cfg),
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            momentum=cfg.optim.momentum,
        )
        task = task_for_config(data, cfg)
        facts: dict[str, Any] = {}
        if uses_feature_cache(cfg):
            head_batches, head_val, facts["feature_cache"] = self._feature_loaders()
            self.head_phase = (HeadOnlyTrainer(model, optimizer, self.device, task=task), head_batches, head_val)
        if self.trains_images:
            tuned = (
                cfg
                if not cfg.model.fine_tune or cfg.data.augment != "none"
                else cfg.model_copy(update={"data": cfg.data.model_copy(update={"augment": "flip"})})
            )  # the model's own
            batches_from = on_device(data, self.device)
            self.train_batches = train_loader(batches_from, tuned, self.device, model)
            self.val_batches = (
                split_loader(batches_from, "val", cfg.train.batch_size, self.device, channels_last=uses_conv(model))
                if len(data.splits["val"])
                else None
            )
            self.trainer = Trainer(
                model, optimizer, self.device, task=task, amp_dtype=autocast_dtype(cfg.train.precision, self.device)
            )
            if distributed.active():
                from torch.nn.parallel import DistributedDataParallel

                self.trainer.ddp = DistributedDataParallel(
                    self.trainer.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
                )
            self.trainer.keep_bn_statistics = bool(cfg.model.fine_tune)  # small batches: keep pretrained stats
            self.trainer.micro_batch = self.micro_batch
            if self.trainer.micro_batch:
                facts["micro_batch"] = self.trainer.micro_batch
        else:
            assert self.head_phase is not None
            self.trainer, self.train_batches, self.val_batches = self.head_phase
            self.head_phase = None
        self.extra_callbacks = self._own_callbacks(optimizer)
        ema = WeightEMA(model, cfg.train.ema, cfg.train.ema_warmup) if cfg.train.ema else None
        for t in (self.trainer, self.head_phase[0] if self.head_phase else None):
            if t is not None:
                t.clip_grad, t.ema = cfg.train.clip_grad, ema  # both phases average one model
                self._extra_val_metrics(t)
        self._resume_state = state  # restored in fit(), once every callback is in place
        return facts

    def _own_callbacks(self, optimizer: torch.optim.Optimizer) -> list[Callback]:
        cfg, model = self.cfg, self.model
        cbs: list[Callback] = [ThreadPolicy(cfg.train.threads)]
        ft = fine_tune_phases(cfg)
        if ft:
            cbs.append(FineTune(ft[0], lambda frozen: apply_freeze(model, "backbone" if frozen else "none")))
        if ft and cfg.train.schedule == "constant":  # the recipe: warm-up, then cosine, for the unfrozen phase
            head_steps = ft[0] * len(self.head_phase[1] if self.head_phase else self.train_batches)
            scheduler = fine_tune_schedule(
                optimizer, head_steps, ft[1] * len(self.train_batches), len(self.train_batches)
            )
            return cbs + [LRSchedule(scheduler, "step", self.monitor)]
        per_epoch = cfg.train.eval_every or len(self.train_batches)  # by steps: an epoch is a period
        scheduler, interval = build_schedule(optimizer, cfg.train, cfg.train.epochs, per_epoch, self.monitor)
        if scheduler is not None:
            cbs.append(LRSchedule(scheduler, interval, self.monitor))
        return cbs

    @property
    def monitor(self) -> str:
        """The monitored metric, or the training loss when there is no validation split."""
        return self.cfg.train.monitor if len(self.data.splits["val"]) else "train_loss"

    def _extra_val_metrics(self, trainer: Trainer) -> None:
        metric = self.cfg.train.monitor.removeprefix("val_")
        if not self.cfg.train.monitor.startswith("val_") or metric in ("loss", "acc"):
            return
        task, classes = trainer.task, self.data.classes

        def value(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
            v = compute_metrics(y.numpy(), task.probs(logits).numpy(), classes).get(metric)
            if v is None:
                raise CnnlabError(f"train.monitor 'val_{metric}' is not defined for this task")
            return {metric: float(v)}

        trainer.val_metrics = value

    def _feature_loaders(self) -> tuple[TensorBatches, TensorBatches | None, dict[str, Any]]:
        """Backbone features of train and val computed once (or found in the persistent feature
        cache from an earlier run on the same data and backbone); batches of those features."""
        cfg, data, device = self.cfg, self.data, self.device
        bs, cl = cfg.train.batch_size, uses_conv(self.model)
        key = {
            "model": cfg.model.name,
            "input_size": data.input_size,
            "channels": data.channels,
            "mean": data.mean,
            "std": data.std,
            "normalize": data.normalize,
            "fingerprint": data.fingerprint(),
        }
        feats, pos, facts = feature_sets(
            self.model, lambda s: split_loader(data, s, bs, device, channels_last=cl), data.splits, key, self.progress
        )
        labels = torch.cat([data.labels[torch.as_tensor(data.splits[s])] for s in ("train", "val")])
        train = TensorBatches(
            feats,
            labels,
            pos["train"],
            cfg.train.step_batch,  # features are small: an accumulated step is one batch here
            [],
            [],
            shuffle=True,
            seed=cfg.train.seed,
            device=device,
            normalize="features",
            sampler=cfg.data.sampler,
        )
        val = (
            TensorBatches(feats, labels, pos["val"], bs, [], [], device=device, normalize="features")
            if len(pos["val"])
            else None
        )
        info = {"used": True, **facts, "dim": int(feats.shape[1]), "images": int(len(feats))}
        log.info(
            "feature cache: %d backbone features of size %d %s in %.1fs",
            len(feats),
            feats.shape[1],
            "reused" if facts["reused"] else "computed once",
            facts["seconds"],
        )
        return train, val, info

    # --------------------------------------------------------------- the loop
    def fit(self, callbacks: Sequence[Callback], epochs: int) -> list[dict[str, Any]]:
        """The run's epochs through the one loop: with ``--fine-tune``, the head on cached features
        first, then the whole model. Both phases' trainers share the model, the optimizer, one
        LoopState and the callbacks, so either restores a checkpoint of either phase."""
        assert self.trainer is not None, "prepare() first"
        cbs = self.extra_callbacks + list(callbacks)
        head = self.head_phase
        for t in ([head[0]] if head is not None else []) + [self.trainer]:
            t.loop, t.callbacks = self.trainer.loop, cbs
        state, self._resume_state = self._resume_state, None
        if state is not None:
            self.trainer.load_state_dict(state)
        phases = fine_tune_phases(self.cfg)
        if head is not None and phases and self.trainer.loop.epoch < phases[0]:
            head[0].fit(head[1], head[2], phases[0])
            if self.trainer.loop.stop_training:
                return self.trainer.loop.history
        return self.trainer.fit(self.train_batches, self.val_batches, epochs, self.cfg.train.eval_every)

    epoch = property(lambda self: self.trainer.loop.epoch if self.trainer else 0)
    history = property(lambda self: self.trainer.loop.history if self.trainer else [])
    stop_reason = property(lambda self: self.trainer.loop.stop_reason if self.trainer else "")

    def validation_logits(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The logits and labels of the validation split as scored after ``epoch``, when that was
        the last validation of this process (the best checkpoint is usually the last one)."""
        last = self.trainer.last_val if self.trainer is not None else None
        return (last[1], last[2]) if last is not None and last[0] == epoch else None

    def state_dict(self) -> dict[str, Any]:
        assert self.trainer is not None
        return self.trainer.state_dict()

    def weights(self) -> dict[str, Any]:
        """What best.pt keeps: the weights' moving average with train.ema, else the weights."""
        ema = self.trainer.ema if self.trainer is not None else None
        return ema.weights() if ema is not None else self.model.state_dict()

    def serialize(self, obj: dict[str, Any]) -> bytes:
        return checkpoint_bytes(obj)
