"""The model registry: each model registers a builder and its input defaults; create_model builds it."""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.models.pretrained import timm_spec, tv_spec
from cnnlab.models.spec import MODELS, ModelSpec


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or of ``timm/<arch>`` / ``tv/<arch>`` built on demand."""
    if name.startswith("timm/"):
        return timm_spec(name)
    if name.startswith("tv/"):
        return tv_spec(name)
    return MODELS.get(name)


def create_model(
    name: str, num_classes: int, in_chans: int = 1, input_size: int | None = None, **options: Any
) -> nn.Module:
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
        raise CnnlabError(
            f"model {name!r} needs an input of at least {spec.min_input_size}×{spec.min_input_size}, "
            f"got {size}; set --input-size"
        )
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
