"""Optimizer registry: names → builders taking the model's parameters and the optim config."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cnnlab.core.monitor import direction
from cnnlab.core.registry import Registry

OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")


def _fused(cls: type, params: Iterable, **kw: Any) -> torch.optim.Optimizer:
    """PyTorch's fused kernel of ``cls`` (one kernel for all parameters: on a CPU the update costs a
    sixth of the per-tensor loop's time), or its multi-tensor version where fusing is unsupported."""
    params = list(params)
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
        return cls(params, foreach=True, **kw)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable, lr: float, weight_decay: float, momentum: float | None) -> torch.optim.Optimizer:
    return _fused(torch.optim.Adam, params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable, lr: float, weight_decay: float, momentum: float | None) -> torch.optim.Optimizer:
    return _fused(torch.optim.AdamW, params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable, lr: float, weight_decay: float, momentum: float | None) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9 if momentum is None else momentum)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params: Iterable, lr: float, weight_decay: float, momentum: float | None) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum or 0.0)


def build_optimizer(
    name: str, params: Iterable, lr: float, weight_decay: float = 0.0, momentum: float | None = None
) -> torch.optim.Optimizer:
    """Build the registered optimizer ``name`` over ``params``."""
    return OPTIMIZERS.get(name)(params, lr=lr, weight_decay=weight_decay, momentum=momentum)


# ---------------------------------------------------------------- learning-rate schedules

ScheduleBuilder = Callable[..., tuple[Any, str]]
SCHEDULES: Registry[ScheduleBuilder] = Registry("schedule")


@SCHEDULES.register("constant")
def _constant(opt: torch.optim.Optimizer, tc: Any, epochs: int, steps: int) -> tuple[Any, str]:
    return None, "epoch"


@SCHEDULES.register("step")
def _step(opt: torch.optim.Optimizer, tc: Any, epochs: int, steps: int) -> tuple[Any, str]:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=tc.step_size, gamma=tc.gamma), "epoch"


@SCHEDULES.register("cosine")
def _cosine(opt: torch.optim.Optimizer, tc: Any, epochs: int, steps: int) -> tuple[Any, str]:
    warm = tc.warmup_epochs

    def factor(e: int) -> float:  # e = epochs completed; the factor applies to epoch e + 1
        if e < warm:
            return (e + 1) / warm
        span = max(epochs - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * min(e - warm, span) / span))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor), "epoch"


@SCHEDULES.register("onecycle")
def _onecycle(opt: torch.optim.Optimizer, tc: Any, epochs: int, steps: int) -> tuple[Any, str]:
    max_lr = [g["lr"] for g in opt.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=epochs * steps), "step"


@SCHEDULES.register("plateau")
def _plateau(opt: torch.optim.Optimizer, tc: Any, epochs: int, steps: int, monitor: str) -> tuple[Any, str]:

    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=direction(monitor), factor=tc.gamma, patience=tc.plateau_patience
    ), "plateau"


@SCHEDULES.register("exp-decay")
def _exp_decay(opt: torch.optim.Optimizer, tc: Any, epochs: int, steps: int) -> tuple[Any, str]:
    """Seed 004: the initial LR for ``decay_start`` epochs, then × exp(−decay_rate) every epoch."""
    start, rate = tc.decay_start, tc.decay_rate
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: math.exp(-rate * max(0, e + 1 - start))), "epoch"


@SCHEDULES.register("exponential")
def _exponential(opt: torch.optim.Optimizer, tc: Any, epochs: int, steps: int) -> tuple[Any, str]:
    """Keras' ExponentialDecay (seed 000's sweep): at optimizer step i (from 0) the LR is the initial
    LR × decay_multiplier^(i / decay_steps), the exponent floored with ``staircase``."""
    every, base, stair = tc.decay_steps, tc.decay_multiplier, tc.staircase

    def factor(i: int) -> float:
        return float(base ** ((i // every) if stair else (i / every)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor), "step"


def build_schedule(
    opt: torch.optim.Optimizer, train_cfg: Any, epochs: int, steps_per_epoch: int, monitor: str | None = None
) -> tuple[Any, str]:
    """(scheduler or None, when it steps: "epoch", "step" or "plateau"). ``monitor`` is the metric a
    plateau schedule watches (default ``train_cfg.monitor``); its direction comes from the one table."""
    builder = SCHEDULES.get(train_cfg.schedule)
    if train_cfg.schedule == "plateau":
        return builder(opt, train_cfg, epochs, steps_per_epoch, monitor or train_cfg.monitor)
    return builder(opt, train_cfg, epochs, steps_per_epoch)
