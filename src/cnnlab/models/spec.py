"""What a registered model is (its builder and input defaults) and the registry of them: pure data
that the families fill by decorator and every consumer reads."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnlab.core.registry import Registry

__all__ = ["DYNAMIC_PREFIXES", "MODELS", "ModelSpec", "register_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder and the defaults preprocessing is resolved from.

    Attributes:
        name: registry name.
        builder: ``builder(num_classes, in_chans, input_size, **options) -> nn.Module``.
        description: one line for ``cnnlab list models``.
        default_input_size: square side the model is designed for.
        fixed_input_size: True when the model must get ``default_input_size`` (pretrained
            nets); False lets a built-in dataset keep its native size.
        fixed_channels: channels the model requires, or None for any.
        min_input_size: smallest side it can process.
        pretrained: where pretrained weights come from, or None.
        mean, std: the normalisation its pretrained weights expect (None: use the data's).
        interpolation: resize filter its pretrained weights expect.
        recipe_steps: optimizer steps of cnnlab's default recipe for it trained from scratch (one
            cycle; None: the recipe's general length), measured per net (benchmarks/race.py).
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    default_input_size: int = 28
    fixed_input_size: bool = False
    fixed_channels: int | None = None
    min_input_size: int = 1
    pretrained: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    recipe_steps: int | None = None

    def options(self) -> list[str]:
        """Keyword options the builder accepts beyond the three common ones."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in {"num_classes", "in_chans", "input_size"}]


MODELS: Registry[ModelSpec] = Registry("model")
DYNAMIC_PREFIXES = ("timm/", "tv/")


def register_model(name: str, description: str, **defaults: Any) -> Callable:
    """Decorator registering ``builder`` as model ``name`` with ModelSpec ``defaults``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelSpec(name=name, builder=builder, description=description, **defaults))
        return builder

    return deco
