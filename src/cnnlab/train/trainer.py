"""The PyTorch engine's steps: a Trainer holds the model, optimizer and task and does one training step
and one evaluation; the epoch loop itself is train/loop.py, shared with the NumPy engine."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.models.ops import predict_logits, uses_conv
from cnnlab.models.transfer import bn_to_eval, frozen_bn_to_eval
from cnnlab.train import distributed
from cnnlab.train.callbacks import Callback
from cnnlab.train.ema import WeightEMA
from cnnlab.train.loop import run_epochs
from cnnlab.train.losses import MultiLabel, SingleLabel
from cnnlab.train.state import LoopState


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state a run depends on, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),  # type: ignore[index]  # legacy tuple form
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device`` (None: plain fp32).

    ``auto`` is bf16 on a CUDA GPU that supports it (same range as fp32, no loss scaling needed)
    and fp32 everywhere else: CPUs without bf16 units run it slower than fp32."""

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type == "cpu":
        raise CnnlabError("train.precision 'fp16' is for GPUs; on a CPU use bf16 or fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


class Trainer:
    """One training step and one evaluation of a PyTorch model; :meth:`fit` runs them in the epoch
    loop (train/loop.py) with the callbacks, over the trainer's :class:`LoopState`.

    Override :meth:`train_step` or :meth:`forward` to change the maths; the loop stays the same.

    Args:
        model: the network; moved to ``device``.
        optimizer: over the model's trainable parameters.
        device: where training happens.
        callbacks: called in order at every event.
        task: loss, accuracy and probabilities (single-label cross-entropy by default).
        channels_last: use the channels-last memory format for conv nets (much faster
            on CPUs with oneDNN).
        amp_dtype: autocast forward passes to this dtype (bf16/fp16; fp16 with a gradient scaler).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
        task: SingleLabel | MultiLabel | None = None,
        channels_last: bool = True,
        amp_dtype: torch.dtype | None = None,
    ):
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type) if amp_dtype == torch.float16 else None
        self.channels_last = channels_last and uses_conv(model)
        self.model = (
            model.to(self.device, memory_format=torch.channels_last) if self.channels_last else model.to(self.device)  # type: ignore[call-overload]  # torch's stub lacks memory_format
        )
        self.optimizer = optimizer
        self.callbacks = list(callbacks)
        self.task = task or SingleLabel()
        self.loop = LoopState()  # epochs done, steps, history, stop reason; shared by a run's phases
        # fine-tuning on small batches: BatchNorm layers use (and keep) their pretrained statistics
        self.keep_bn_statistics = False
        # images per forward/backward pass; a larger batch sums their gradients into one step
        self.micro_batch: int | None = None
        self.clip_grad: float | None = None  # the gradients' global L2 norm is clipped to this
        self.ddp: nn.Module | None = None  # the DistributedDataParallel wrapper under torchrun
        # train.ema: the weights' moving average, updated after every step; validation judges it
        self.ema: WeightEMA | None = None
        # optional: extra validation metrics from (logits, labels), merged into the epoch logs
        self.val_metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None
        # the last validation's (epoch, logits, labels) in one process: the run's final scoring of
        # that epoch's checkpoint on the validation split reuses them instead of a second pass
        self.last_val: tuple[int, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ steps
    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def autocast(self) -> Any:
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch (override to train part of a model, as the feature cache does)."""
        return self.model(self._prep(x))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimisation step; returns (summed loss, correct predictions) for the batch.

        Under torchrun (``self.ddp`` set) this rank's mean loss is weighted by its share of the
        global batch, so that DDP's gradient average is the global batch's mean-loss gradient.
        With ``micro_batch`` smaller than the batch, the batch goes through in slices whose
        gradients add up to the batch's mean-loss gradient (exact where no layer mixes images:
        BatchNorm in eval mode or absent), so memory holds one slice's activations."""
        if self.micro_batch and len(y) > self.micro_batch and self.ddp is None and self.scaler is None:
            return self._sliced_step(x, y, self.micro_batch)
        with self.autocast():
            logits = self.ddp(self._prep(x)) if self.ddp is not None else self.forward(x)
            loss = self.task.train_loss(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        scaled = loss
        if self.ddp is not None:
            (global_n,) = distributed.all_sum(float(len(y)))
            scaled = loss * (len(y) * distributed.world_size() / global_n)
        if self.scaler is not None:
            self.scaler.scale(scaled).backward()
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            scaled.backward()
            self._clip()
            self.optimizer.step()
        self._stepped()
        return float(loss.detach()) * len(y), self.task.correct(logits, y)

    def _stepped(self) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    def judged(self) -> Any:
        """A block in which the model holds the weights a validation judges (the EMA's, when on)."""
        return self.ema.swapped_into(self.model) if self.ema is not None else contextlib.nullcontext()

    def _clip(self) -> None:
        if self.clip_grad is None:
            return
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.clip_grad)

    def _sliced_step(self, x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[float, int]:
        self.optimizer.zero_grad(set_to_none=True)
        total, correct = 0.0, 0
        weight = getattr(self.task, "weight", None)  # class weights: the mean is over the weights' sum

        def mass(t: torch.Tensor) -> float:
            return float(weight.to(t.device)[t].sum()) if weight is not None and t.dim() == 1 else float(len(t))

        whole = mass(y)
        for start in range(0, len(y), size):
            xs, ys = x[start : start + size], y[start : start + size]
            with self.autocast():
                logits = self.forward(xs)
                loss = self.task.train_loss(logits.float(), ys)
            (loss * (mass(ys) / whole)).backward()  # slices weighted by their share: the batch's mean
            total += float(loss.detach()) * mass(ys) / whole * len(y)  # the batch's mean × its size
            correct += self.task.correct(logits, ys)
        self._clip()
        self.optimizer.step()
        self._stepped()
        return total, correct

    def evaluate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Mean loss and accuracy over ``batches``."""
        return self.figures(*self.logits(batches))

    def logits(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            return predict_logits(self.model, batches, self.forward)

    def figures(self, logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Loss, accuracy and the extra validation metrics of ``logits`` against ``y``."""
        if len(y) == 0:
            return {}
        out = {"loss": float(self.task.loss(logits, y)), "acc": self.task.correct(logits, y) / len(y)}
        if self.val_metrics is not None:
            out.update(self.val_metrics(logits, y))
        return out

    # ------------------------------------------------------------------ loop
    epoch = property(lambda self: self.loop.epoch)
    history = property(lambda self: self.loop.history)
    global_step = property(lambda self: self.loop.global_step)
    stop_reason = property(lambda self: self.loop.stop_reason)

    def fit(self, train: Any, val: Any | None, epochs: int, every: int | None = None) -> list[dict[str, Any]]:
        """Train from the epoch after ``self.loop.epoch`` up to ``epochs``.

        Args:
            train: batches with ``set_epoch(e)`` and ``len()``; reshuffled per epoch.
            val: validation batches, or None.
            epochs: the last epoch to run (so a resumed trainer continues to it).
            every: train by steps: an epoch is this many steps (``train.steps``).

        Returns:
            The history: one dict per completed epoch.
        """
        self.loop.model = self.model
        return run_epochs(self.loop, TorchSteps(self, train, val), self.callbacks, epochs, every)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this epoch ended."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.loop.state_dict(),
            "rng": rng_state(),
            "callbacks": {cb.key: cb.state_dict() for cb in self.callbacks},
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, RNG states included."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if "ema" not in state:
                raise CnnlabError("this checkpoint was trained without train.ema: resume it without --ema")
            self.ema.load_state_dict(state["ema"])
        self.loop.load_state_dict(state)
        for cb in self.callbacks:
            saved = state["callbacks"].get(cb.key)
            if saved is not None:
                cb.load_state_dict(saved)
        set_rng_state(state["rng"])


KEEP_VAL_LOGITS = 25_000_000  # floats (100 MB): an ImageNet-sized validation split's logits are kept


class TorchSteps:
    """The epoch loop's steps (``train.loop.Steps``) for a :class:`Trainer`."""

    def __init__(self, trainer: Trainer, train: Any, val: Any | None):
        self.trainer, self.train, self.val = trainer, train, val

    def __len__(self) -> int:
        return len(self.train)

    def batches(self, epoch: int) -> Any:
        t = self.trainer
        self.train.set_epoch(epoch)
        t.model.train()
        frozen_bn_to_eval(t.model)
        if t.keep_bn_statistics:
            bn_to_eval(t.model)
        return self.train

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int, int]:
        x, y = batch
        loss, correct = self.trainer.train_step(x, y)
        return loss, correct, len(y)

    def validate(self) -> dict[str, float]:
        if self.val is None:
            return {}
        t = self.trainer
        with t.judged():
            logits, y = t.logits(self.val)
        small = logits.numel() <= KEEP_VAL_LOGITS
        t.last_val = (t.loop.epoch + 1, logits, y) if small and not distributed.active() else None
        return t.figures(logits, y)

    def lr(self) -> float:
        return float(self.trainer.optimizer.param_groups[0]["lr"])

    def reduce(self, loss: float, correct: int, seen: int) -> tuple[float, int, int]:
        total = distributed.all_sum(loss, correct, seen)  # every rank's share
        return float(total[0]), int(total[1]), int(total[2])
