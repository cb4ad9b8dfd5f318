"""The ``scratch`` engine: cnnlab's run machinery (data, loaders, callbacks, checkpoints, run
folder, report) around the NumPy nets of :mod:`cnnlab.scratch`. Checkpoints are ``.npz`` files
(arrays plus one JSON record), loadable without pickle; their weights carry PyTorch's names and
shapes, so `evaluate`, `predict`, `report` and `compare` read a scratch run like any other."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.checkpoints import load_weights_file, npz_checkpoint_bytes
from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import Config
from cnnlab.data.loaders import split_loader
from cnnlab.data.pipeline import PreparedData
from cnnlab.data.transforms import build_transform
from cnnlab.evaluate.metrics import compute_metrics
from cnnlab.scratch import layers as L
from cnnlab.scratch import models as SM
from cnnlab.scratch import optim as SO
from cnnlab.train.callbacks import Callback
from cnnlab.train.engines.base import ENGINES
from cnnlab.train.loop import run_epochs
from cnnlab.train.losses import balanced_class_weights
from cnnlab.train.state import LoopState

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def _unsupported(cfg: Config) -> str | None:
    """Why this config needs the torch engine, or None."""
    m, d, t = cfg.model, cfg.data, cfg.train
    if m.name not in SM.MODELS:
        return f"model {m.name!r}: the scratch engine builds {', '.join(SM.MODELS)}"
    if m.activation not in (None, *SM.ACTIVATIONS):
        return f"activation {m.activation!r}: the scratch engine has {', '.join(SM.ACTIVATIONS)}"
    extra = set(m.options) - SM.CONV_OPTIONS.get(m.name, set())
    if extra:
        return f"model options {', '.join(sorted(extra))}: the scratch {m.name} does not take them"
    if m.batch_norm and m.name != "cnn":
        return f"batch_norm on {m.name!r}: only the scratch cnn has it"
    if m.weights or m.freeze != "none" or m.fine_tune or m.unfreeze_last or m.train_bn_only:
        return "transfer learning (weights, freeze, fine-tune): the scratch engine trains from scratch"
    if cfg.optim.name not in OPTIMIZERS:
        return f"optimizer {cfg.optim.name!r}: the scratch engine has {', '.join(OPTIMIZERS)}"
    if t.schedule != "constant":
        return f"schedule {t.schedule!r}: the scratch engine keeps a constant learning rate"
    if d.mixup or d.cutmix or d.random_erasing:
        return "mixup, cutmix and random erasing: the scratch engine takes plain (augmented) images"
    if t.init_output_bias:
        return "init_output_bias: not in the scratch engine"
    craft = [name for name, on in (("train.accumulate", t.accumulate > 1), ("train.clip_grad", t.clip_grad),
                                   ("train.label_smoothing", t.label_smoothing),
                                   ("train.ema", t.ema)) if on]  # fmt: skip
    if craft:
        return f"{', '.join(craft)}: not in the scratch engine (its backprop is plain cross-entropy, one batch a step)"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "torchrun: the scratch engine runs in one process"
    return None


@ENGINES.register("scratch")
class ScratchEngine:
    """Hand-written NumPy backprop (cnnlab.scratch), CPU: mlp*, simplest, cnn, cnn-small.

    Adam, AdamW, SGD or RMSprop with a constant learning rate; `cnnlab gradcheck` proves it."""

    name = "scratch"
    schedules = False  # a constant learning rate only
    checkpoint_suffix = ".npz"

    def __init__(self, cfg: Config, data: PreparedData, device: torch.device):
        why = _unsupported(cfg)
        if why:
            raise CnnlabError(f"--engine scratch: {why}; use --engine torch for this run")
        if device.type != "cpu":
            raise CnnlabError(f"--engine scratch runs on the CPU (NumPy); got --device {cfg.train.device}")
        self.cfg, self.data = cfg, data
        m = cfg.model
        opts = {
            k: v
            for k, v in {
                "hidden": m.hidden,
                "dropout": m.dropout,
                "activation": m.activation,
                "init": m.init,
                "batch_norm": m.batch_norm,
                **m.options,
            }.items()
            if v is not None
        }
        # the options were checked when the run was resolved (check_model_fits builds the registry's twin)
        self.model = SM.build(m.name, len(data.classes), data.channels, data.input_size, opts, seed=cfg.train.seed)
        self.loop = LoopState()
        self.progress = False
        self.callbacks: list[Callback] = []

    epoch = property(lambda self: self.loop.epoch)
    history = property(lambda self: self.loop.history)
    stop_reason = property(lambda self: self.loop.stop_reason)

    def parameters(self) -> dict[str, Any]:
        n = self.model.num_parameters()
        return {"total": n, "trainable": n, "frozen": 0}

    def prepare(self, state: dict[str, Any] | None) -> dict[str, Any]:
        cfg, data = self.cfg, self.data
        o = cfg.optim
        layers = self.model.layers
        if o.name == "sgd":
            self.opt: SO.Optimizer = SO.SGD(layers, o.lr, 0.9 if o.momentum is None else o.momentum, o.weight_decay)
        elif o.name == "rmsprop":
            self.opt = SO.RMSprop(layers, o.lr, momentum=o.momentum or 0.0, weight_decay=o.weight_decay)
        elif o.name == "adamw":
            self.opt = SO.AdamW(layers, o.lr, weight_decay=o.weight_decay)
        else:
            self.opt = SO.Adam(layers, o.lr, weight_decay=o.weight_decay)
        if data.multilabel:
            self.loss: Any = L.BinaryCrossEntropy()
        else:
            weights = (
                balanced_class_weights(data.class_counts("train")).numpy()
                if cfg.train.class_weights == "auto"
                else None
            )
            self.loss = L.SoftmaxCrossEntropy(weights)
        has_bn = any(isinstance(layer, L.BatchNorm) for layer in layers)
        transform = build_transform(cfg.data.augment, data.input_size, data.channels, cfg.data.augment_options)
        cpu = torch.device("cpu")
        self.train_batches = split_loader(
            data,
            "train",
            cfg.train.batch_size,
            cpu,
            shuffle=True,
            seed=cfg.train.seed,
            transform=transform,
            sampler=cfg.data.sampler,
            drop_single=has_bn,
        )
        self.val_batches = split_loader(data, "val", cfg.train.batch_size, cpu) if len(data.splits["val"]) else None
        self._resume = state
        return {}

    # ------------------------------------------------------------------ the loop
    def _step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        logits = self.model.forward(x)
        loss, dz = self.loss(logits, y)
        self.model.backward(dz)
        self.opt.step()
        return loss * len(y), self._correct(logits, y)

    def _correct(self, logits: np.ndarray, y: np.ndarray) -> int:
        if y.ndim == 2 and self.data.multilabel:
            return int(((logits > 0) == (y > 0.5)).all(1).sum())
        return int((logits.argmax(1) == y).sum())

    def _evaluate(self, batches: Any) -> dict[str, float]:
        self.model.eval()
        outs, ys = [], []
        for x, y in batches:
            outs.append(self.model.forward(x.numpy()))
            ys.append(y.numpy())
        self.model.train()
        if not outs:
            return {}
        z, y = np.concatenate(outs), np.concatenate(ys)
        out = {"loss": self.loss(z, y)[0], "acc": self._correct(z, y) / len(y)}
        metric = self.cfg.train.monitor.removeprefix("val_")
        if self.cfg.train.monitor.startswith("val_") and metric not in ("loss", "acc"):
            probs = 1 / (1 + np.exp(-z)) if self.data.multilabel else np.exp(L.log_softmax(z))
            value = compute_metrics(y, probs, self.data.classes).get(metric)
            if value is not None:
                out[metric] = float(value)
        return out

    def fit(self, callbacks: Sequence[Callback], epochs: int) -> list[dict[str, Any]]:
        """The run's epochs through the one loop (train/loop.py), this engine supplying the steps."""
        self.callbacks = list(callbacks)
        if self._resume is not None:
            self.load_state_dict(self._resume)
            self._resume = None
        self.loop.model = self.model
        return run_epochs(self.loop, _NumpySteps(self), self.callbacks, epochs, self.cfg.train.eval_every)

    # ------------------------------------------------------------------ state and checkpoints
    def weights(self) -> dict[str, Any]:
        return {k: v.copy() for k, v in self.model.state_dict().items()}

    def validation_logits(self, epoch: int) -> None:
        return None  # the final scoring runs its own pass (the NumPy engine keeps no logits)

    def state_dict(self) -> dict[str, Any]:
        dropout_rngs = [layer.rng.bit_generator.state for layer in self.model.layers if isinstance(layer, L.Dropout)]
        return {
            "model": self.weights(),
            "optimizer": self.opt.state_dict(),
            **self.loop.state_dict(),
            "rng": {"dropout": dropout_rngs, "torch": torch.get_rng_state().numpy().tolist()},
            "callbacks": {cb.key: cb.state_dict() for cb in self.callbacks},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.loop.load_state_dict(state)
        for layer, rng in zip([x for x in self.model.layers if isinstance(x, L.Dropout)], state["rng"]["dropout"]):
            layer.rng.bit_generator.state = rng
        torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
        for cb in self.callbacks:
            saved = state["callbacks"].get(cb.key)
            if saved is not None:
                cb.load_state_dict(saved)

    def serialize(self, obj: dict[str, Any]) -> bytes:
        return npz_checkpoint_bytes(obj)

    @staticmethod
    def load_checkpoint(path: Path) -> dict[str, Any]:
        return load_weights_file(path, "checkpoint")


class _NumpySteps:
    """The epoch loop's steps (``train.loop.Steps``) for the NumPy engine."""

    def __init__(self, engine: ScratchEngine):
        self.engine = engine

    def __len__(self) -> int:
        return len(self.engine.train_batches)

    def batches(self, epoch: int) -> Any:
        self.engine.train_batches.set_epoch(epoch)
        self.engine.model.train()
        return self.engine.train_batches

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int, int]:
        x, y = batch
        loss, correct = self.engine._step(x.numpy(), y.numpy())
        return loss, correct, len(y)

    def validate(self) -> dict[str, float]:
        e = self.engine
        return e._evaluate(e.val_batches) if e.val_batches is not None else {}

    def lr(self) -> float:
        return float(self.engine.opt.lr)

    def reduce(self, loss: float, correct: int, seen: int) -> tuple[float, int, int]:
        return loss, correct, seen  # one process
