"""What this installation offers, for `cnnlab list`: models (with parameter counts), datasets,
augmentation presets and training engines."""

from __future__ import annotations

from typing import Any

from cnnlab.data.sources import DATASETS
from cnnlab.data.transforms import PRESETS, preset_options
from cnnlab.models.factory import MODELS, count_parameters
from cnnlab.train.engines import ENGINES

__all__ = ["catalog", "list_augmentations", "list_datasets", "list_engines", "list_models"]


def list_models(num_classes: int = 10, in_chans: int = 3) -> list[dict[str, Any]]:
    """Registered models: name, parameters (at the default input size, ``in_chans`` channels and
    ``num_classes`` classes), default input size, pretrained source and description."""
    rows = []
    for name in MODELS.names():
        spec = MODELS.get(name)
        opts = {"pretrained": False} if "pretrained" in spec.options() else {}
        model = spec.builder(num_classes=num_classes, in_chans=in_chans, input_size=spec.default_input_size, **opts)
        rows.append(
            {
                "name": name,
                "parameters": count_parameters(model)["total"],
                "input_size": spec.default_input_size,
                "pretrained": spec.pretrained or "-",
                "description": spec.description,
            }
        )
    return rows


def list_augmentations() -> list[dict[str, Any]]:
    """Augmentation presets and their options with defaults."""
    return [{"name": n, "options": preset_options(n)} for n in PRESETS.names()]


def list_datasets() -> list[dict[str, Any]]:
    """Built-in datasets: name, description, image size, classes."""
    return [
        {
            "name": d.name,
            "description": d.description,
            "size": d.native_size,
            "channels": d.native_channels,
            "classes": d.num_classes,
        }
        for d in (DATASETS.get(n) for n in DATASETS.names())
    ]


def list_engines() -> list[dict[str, Any]]:
    """Training engines: name and the first line of their description."""
    return [{"name": n, "description": (ENGINES.get(n).__doc__ or "").strip().split("\n")[0]} for n in ENGINES.names()]


def catalog(what: str, num_classes: int = 10, in_chans: int = 3) -> list[dict[str, Any]]:
    """`cnnlab list WHAT`: the rows of models, datasets, augmentations or engines."""
    if what == "models":
        return list_models(num_classes, in_chans)
    listing = {"datasets": list_datasets, "augmentations": list_augmentations, "engines": list_engines}
    return listing[what]()
