"""Optimizer registry: names → builders taking the model's parameters and the optim config."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch

from ..registry import Registry

OptimizerBuilder = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")


@OPTIMIZERS.register("adam")
def _adam(params: Iterable, lr: float, weight_decay: float, momentum: Optional[float]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable, lr: float, weight_decay: float, momentum: Optional[float]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable, lr: float, weight_decay: float, momentum: Optional[float]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9 if momentum is None else momentum)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params: Iterable, lr: float, weight_decay: float, momentum: Optional[float]) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum or 0.0)


def build_optimizer(name: str, params: Iterable, lr: float, weight_decay: float = 0.0,
                    momentum: Optional[float] = None) -> torch.optim.Optimizer:
    """Build the registered optimizer ``name`` over ``params``."""
    return OPTIMIZERS.get(name)(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
