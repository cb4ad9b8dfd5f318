"""What this installation offers, for `cnnlab list`: models (with parameter counts), datasets,
augmentation presets and training engines."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cnnlab.data.sources import DATASETS
from cnnlab.data.transforms import PRESETS, preset_options
from cnnlab.models.factory import MODELS, count_parameters
from cnnlab.train.engines import ENGINES

__all__ = [
    "AugmentationRow",
    "Catalog",
    "DatasetInfo",
    "EngineRow",
    "ModelRow",
    "catalog",
    "list_augmentations",
    "list_datasets",
    "list_engines",
    "list_models",
]


class ModelRow(BaseModel):
    """A registered model: its parameters at its default input size, that size, its pretrained source."""

    name: str
    parameters: int
    input_size: int
    pretrained: str
    description: str


class AugmentationRow(BaseModel):
    name: str
    options: dict[str, Any]  # option → default


class DatasetInfo(BaseModel):
    name: str
    description: str
    size: int
    channels: int
    classes: int


class EngineRow(BaseModel):
    name: str
    description: str


class Catalog(BaseModel):
    """`cnnlab list WHAT`: the rows of one of models, datasets, augmentations or engines."""

    what: str
    models: list[ModelRow] = []
    datasets: list[DatasetInfo] = []
    augmentations: list[AugmentationRow] = []
    engines: list[EngineRow] = []

    def rows(self) -> list[dict[str, Any]]:
        """The rows asked for, as JSON."""
        return [r.model_dump(mode="json") for r in getattr(self, self.what)]


def list_models(num_classes: int = 10, in_chans: int = 3) -> list[ModelRow]:
    """Registered models: name, parameters (at the default input size, ``in_chans`` channels and
    ``num_classes`` classes), default input size, pretrained source and description."""
    rows = []
    for name in MODELS.names():
        spec = MODELS.get(name)
        opts = {"pretrained": False} if "pretrained" in spec.options() else {}
        model = spec.builder(num_classes=num_classes, in_chans=in_chans, input_size=spec.default_input_size, **opts)
        rows.append(ModelRow(name=name, parameters=count_parameters(model)["total"], input_size=spec.default_input_size,
                             pretrained=spec.pretrained or "-", description=spec.description))  # fmt: skip
    return rows


def list_augmentations() -> list[AugmentationRow]:
    """Augmentation presets and their options with defaults."""
    return [AugmentationRow(name=n, options=preset_options(n)) for n in PRESETS.names()]


def list_datasets() -> list[DatasetInfo]:
    """Built-in datasets: name, description, image size, classes."""
    return [
        DatasetInfo(
            name=d.name,
            description=d.description,
            size=d.native_size,
            channels=d.native_channels,
            classes=d.num_classes,
        )  # fmt: skip
        for d in (DATASETS.get(n) for n in DATASETS.names())
    ]


def list_engines() -> list[EngineRow]:
    """Training engines: name and the first line of their description."""
    return [
        EngineRow(name=n, description=(ENGINES.get(n).__doc__ or "").strip().split("\n")[0]) for n in ENGINES.names()
    ]


def catalog(what: str, num_classes: int = 10, in_chans: int = 3) -> Catalog:
    """`cnnlab list WHAT`: the rows of models, datasets, augmentations or engines."""
    if what == "models":
        return Catalog(what=what, models=list_models(num_classes, in_chans))
    if what == "datasets":
        return Catalog(what=what, datasets=list_datasets())
    if what == "augmentations":
        return Catalog(what=what, augmentations=list_augmentations())
    return Catalog(what="engines", engines=list_engines())
