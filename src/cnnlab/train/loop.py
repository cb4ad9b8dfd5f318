"""The one epoch loop every engine runs: a declared list of events, a ``LoopState`` that callbacks
read and checkpoints save, callbacks called in their declared order, and training ended by a
callback raising :class:`StopTraining`.

An engine supplies only its steps (:class:`Steps`): what one training batch does, how validation
is computed, the current learning rate, and how figures are summed across torchrun ranks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from cnnlab.train.callbacks import Callback
from cnnlab.train.state import LoopState, StopTraining

__all__ = ["EVENTS", "LoopState", "Periods", "StopTraining", "Steps", "call", "end_epoch", "ordered", "run_epochs"]

# the events of a fit, in the order they happen; a callback overrides the ones it needs
EVENTS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


class Steps(Protocol):
    """What an engine gives the loop for one phase of training."""

    def batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of ``epoch`` (models set to training mode)."""
        ...

    def __len__(self) -> int:
        """Batches in one training epoch."""
        ...

    def step(self, batch: Any) -> tuple[float, int, int]:
        """One optimisation step: (summed loss, correct predictions, images) of the batch."""
        ...

    def validate(self) -> dict[str, float]:
        """Validation figures (``loss``, ``acc``, maybe the monitored metric); {} without a split."""
        ...

    def lr(self) -> float:
        """The learning rate now (of the first parameter group)."""
        ...

    def reduce(self, loss: float, correct: int, seen: int) -> tuple[float, int, int]:
        """The epoch's sums over every torchrun rank (the same figures in one process)."""
        ...


def ordered(callbacks: Iterable[Callback]) -> list[Callback]:
    """``callbacks`` by their declared ``order`` (stable: equal orders keep the given order)."""
    return sorted(callbacks, key=lambda cb: cb.order)


def call(callbacks: Sequence[Callback], event: str, state: LoopState, *args: Any) -> None:
    """Deliver ``event`` to every callback; a :class:`StopTraining` stops training, not the event."""
    for cb in callbacks:
        try:
            getattr(cb, event)(state, *args)
        except StopTraining as stop:
            state.stop(stop.reason)


def end_epoch(
    state: LoopState, epoch: int, sums: tuple[float, int, int], val: dict[str, float], lr: float, started: float
) -> dict[str, Any]:
    """The epoch's log row (train/val loss and accuracy, other val metrics, LR, seconds), added to
    the history; a non-finite training loss stops training with the reason."""
    loss_sum, correct, seen = sums
    logs: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)}
    val = dict(val)
    logs["val_loss"], logs["val_acc"] = val.pop("loss", None), val.pop("acc", None)
    logs.update({f"val_{k}": v for k, v in val.items()})
    logs["lr"], logs["seconds"] = lr, round(time.perf_counter() - started, 3)
    state.epoch = epoch
    state.history.append(logs)
    if not math.isfinite(logs["train_loss"]):
        state.stop(f"training loss became {logs['train_loss']} in epoch {epoch}; lower the learning rate")
    return logs


class Periods:
    """Training by steps (``train.steps``): each of the loop's "epochs" is ``every`` optimisation
    steps taken from the training data in order, data epochs running on across periods (each
    reshuffled as usual), then validation. A period that starts inside a data epoch (a resumed
    run) skips that epoch's first batches; in one process the iterator simply continues."""

    def __init__(self, steps: Steps, every: int):
        self.steps, self.every = steps, every
        self._next: tuple[int, Any] | None = None  # (first step of the next period, the live iterator)

    def __len__(self) -> int:
        return self.every

    def batches(self, period: int) -> Iterable[Any]:
        start = (period - 1) * self.every
        n = len(self.steps)
        if self._next is not None and self._next[0] == start:
            it = self._next[1]
        else:
            it = self._from(start // n + 1, start % n)
        for taken in range(self.every):
            batch = next(it, None)
            if batch is None:  # the data epoch ended: the next one, reshuffled
                it = self._from((start + taken) // n + 1, 0)
                batch = next(it)
            yield batch
        self._next = (start + self.every, it)

    def _from(self, data_epoch: int, skip: int) -> Any:
        it = iter(self.steps.batches(data_epoch))
        for _ in range(skip):
            next(it)
        return it

    def step(self, batch: Any) -> tuple[float, int, int]:
        return self.steps.step(batch)

    def validate(self) -> dict[str, float]:
        return self.steps.validate()

    def lr(self) -> float:
        return self.steps.lr()

    def reduce(self, loss: float, correct: int, seen: int) -> tuple[float, int, int]:
        return self.steps.reduce(loss, correct, seen)


def run_epochs(
    state: LoopState, steps: Steps, callbacks: Sequence[Callback], epochs: int, every: int | None = None
) -> list[dict[str, Any]]:
    """Train from the epoch after ``state.epoch`` up to ``epochs`` (so a resumed fit continues to
    it), delivering :data:`EVENTS` to ``callbacks``; returns the history. With ``every``, an epoch
    is that many steps (:class:`Periods`) and each history row says the step it ended at."""
    if every:
        steps = Periods(steps, every)
    cbs = ordered(callbacks)
    state.epochs, state.stop_reason, state.steps_per_epoch = epochs, "", len(steps)
    call(cbs, "on_train_begin", state)
    for epoch in range(state.epoch + 1, epochs + 1):
        started = time.perf_counter()
        call(cbs, "on_epoch_begin", state, epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        for n, batch in enumerate(steps.batches(epoch), start=1):
            batch_loss, batch_correct, size = steps.step(batch)
            loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + size
            state.global_step += 1
            logs = {"loss": loss_sum / seen, "acc": correct / seen, "batch_loss": batch_loss,
                    "batch_correct": batch_correct, "batch_size": size}  # fmt: skip
            call(cbs, "on_batch_end", state, n, logs)
        val = steps.validate()
        row = end_epoch(state, epoch, steps.reduce(loss_sum, correct, seen), val, steps.lr(), started)
        if every:
            row["step"] = epoch * every
        call(cbs, "on_epoch_end", state, epoch, row)
        if state.stop_training:
            break
    call(cbs, "on_train_end", state)
    return state.history
