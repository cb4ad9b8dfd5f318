"""An exponential moving average of a model's weights (``train.ema``): torch's own AveragedModel
keeps the average; this module gives it a warm-up and swaps the average into the model while the
model is being judged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightEMA:
    """The average ``w_ema ← d·w_ema + (1 - d)·w`` after every optimizer step, its parameters and
    BatchNorm statistics both (``use_buffers``), on the model's device.

    With ``warmup`` the decay of update ``t`` is ``min(decay, (1 + t) / (10 + t))`` (TensorFlow's
    ExponentialMovingAverage with ``num_updates``), so the first steps' random weights fade
    within tens of steps rather than thousands.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = float(decay), warmup
        self.average = AveragedModel(model, multi_avg_fn=self._blend, use_buffers=True)

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def _blend(
        self,
        averaged: tuple[torch.Tensor, ...] | list[torch.Tensor],
        current: tuple[torch.Tensor, ...] | list[torch.Tensor],
        n: torch.Tensor | int,
    ) -> None:
        d = self.decay_at(int(n))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, 1 - d)
            else:  # counters (BatchNorm's num_batches_tracked): the model's own
                a.copy_(c)

    def update(self, model: nn.Module) -> None:
        self.average.update_parameters(model)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged state dict, keyed as the model's own."""
        return self.average.module.state_dict()

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own again after it (copied
        in place, so the optimizer keeps its parameters)."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.weights())
        try:
            yield
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average.state_dict()}  # the decay and warm-up come with the run's config

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state["average"])
