"""The state of a fit that callbacks read and checkpoints save, and the exception a callback raises
to end training (train/loop.py runs the loop over them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoopState", "StopTraining"]


class StopTraining(Exception):
    """Raised by a callback to end training: the event that raised it is still delivered to every
    callback after it (so the epoch's checkpoint is written), then the loop stops."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class LoopState:
    """Where a fit is: what callbacks read, and what a checkpoint saves (:meth:`state_dict`).

    Attributes:
        epoch: epochs completed.
        epochs: the last epoch of the current fit.
        global_step: optimisation steps taken in all epochs.
        steps_per_epoch: batches in one training epoch (an estimate for streamed data).
        history: one row of figures per completed epoch.
        stop_reason: why training ended early ("" while it runs on).
        budget_end: the last epoch a time budget leaves room for, once it has re-planned the fit
            (0: no such plan); a one-cycle schedule then ends its cycle there.
        model: the network being trained, for callbacks that look at it (not saved).
    """

    epoch: int = 0
    epochs: int = 0
    global_step: int = 0
    steps_per_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    budget_end: int = 0
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def stop_training(self) -> bool:
        return bool(self.stop_reason)

    def stop(self, reason: str) -> None:
        """End training after the current event (the first reason given is kept)."""
        self.stop_reason = self.stop_reason or reason

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "global_step": self.global_step, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.global_step, self.history = state["epoch"], state["global_step"], list(state["history"])
