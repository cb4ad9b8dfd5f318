"""The model registry: each model registers a builder and its input defaults; create_model builds it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from ..errors import CnnlabError
from ..registry import Registry


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
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    default_input_size: int = 28
    fixed_input_size: bool = False
    fixed_channels: Optional[int] = None
    min_input_size: int = 1
    pretrained: Optional[str] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    interpolation: str = "bilinear"

    def options(self) -> list[str]:
        """Keyword options the builder accepts beyond the three common ones."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in {"num_classes", "in_chans", "input_size"}]


MODELS: Registry[ModelSpec] = Registry("model")
DYNAMIC_PREFIXES = ("timm/", "tv/")


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or of ``timm/<arch>`` / ``tv/<arch>`` built on demand."""
    if name.startswith("timm/"):
        from .pretrained import timm_spec

        return timm_spec(name)
    if name.startswith("tv/"):
        from .pretrained import tv_spec

        return tv_spec(name)
    return MODELS.get(name)


def register_model(name: str, description: str, **defaults: Any) -> Callable:
    """Decorator registering ``builder`` as model ``name`` with ModelSpec ``defaults``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelSpec(name=name, builder=builder, description=description, **defaults))
        return builder

    return deco


def create_model(name: str, num_classes: int, in_chans: int = 1, input_size: Optional[int] = None,
                 **options: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: outputs of the classifier.
        in_chans: input channels (1 or 3 for most models).
        input_size: square input side; defaults to the model's own.
        **options: model options (e.g. ``hidden=[512, 256]``, ``dropout=0.3``); ``None``
            values are ignored so that unset config fields keep the model's defaults.

    Raises:
        CnnlabError: unknown name, an option the model does not take, or an input too small.
    """
    spec = get_spec(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(spec.options()))
    if unknown:
        raise CnnlabError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes: "
            f"{', '.join(spec.options()) or 'none'}"
        )
    size = input_size or spec.default_input_size
    if size < spec.min_input_size:
        raise CnnlabError(f"model {name!r} needs an input of at least {spec.min_input_size}×{spec.min_input_size}, "
                          f"got {size}; set --input-size")
    if spec.fixed_channels and in_chans != spec.fixed_channels:
        raise CnnlabError(f"model {name!r} needs {spec.fixed_channels}-channel input, got {in_chans}")
    if num_classes < 2:
        raise CnnlabError(f"a classifier needs at least 2 classes, got {num_classes}")
    return spec.builder(num_classes=num_classes, in_chans=in_chans, input_size=size, **options)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, trainable and frozen parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob."""
    return MODELS.names(pattern)
