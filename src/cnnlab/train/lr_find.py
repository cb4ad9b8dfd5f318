"""The learning-rate range test (Smith 2017, as popularised by fastai): raise the LR
exponentially over a few hundred steps and watch the loss. Written by hand: it is a short
loop over the project's own Trainer.train_step, so it sees exactly the training maths."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def range_test(
    trainer: Any,
    batches: Any,  # TensorBatches: set_epoch(e) and iteration
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
) -> dict[str, Any]:
    """Train ``steps`` batches with an exponentially growing LR; stop when the smoothed loss
    exceeds ``diverge`` × its minimum.

    Returns:
        ``lrs``, ``losses`` (smoothed) and ``suggestion``: the LR where the smoothed loss falls
        fastest (steepest negative slope against log LR).
    """
    groups = trainer.optimizer.param_groups
    base = [g["lr"] for g in groups]
    scale = [b / base[0] for b in base]  # keep the groups' ratio (backbone multiplier)
    lrs, losses = [], []
    avg, best = 0.0, math.inf
    it = iter(batches)
    trainer.model.train()
    for i in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            batches.set_epoch(getattr(batches, "epoch", 0) + 1)
            it = iter(batches)
            x, y = next(it)
        lr = start_lr * (end_lr / start_lr) ** (i / max(steps - 1, 1))
        for g, s in zip(groups, scale):
            g["lr"] = lr * s
        loss_sum, _ = trainer.train_step(x, y)
        loss = loss_sum / len(y)
        avg = smooth * avg + (1 - smooth) * loss
        smoothed = avg / (1 - smooth ** (i + 1))
        if not math.isfinite(smoothed):
            break
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if i > 10 and smoothed > diverge * best:
            break
    suggestion = None
    if len(losses) > 5:
        slope = np.gradient(np.asarray(losses), np.log10(np.asarray(lrs)))
        suggestion = float(lrs[int(np.argmin(slope[: max(len(slope) - 3, 1)]))])
    return {"lrs": lrs, "losses": losses, "suggestion": suggestion}
