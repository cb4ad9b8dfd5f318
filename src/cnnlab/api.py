"""The public functions behind every CLI command; each lives with its subject and is re-exported here."""

from __future__ import annotations

from typing import Any

from .cv import cross_validate, paired_comparison
from .data import DATASETS
from .evaluate.runner import (
    compare,
    evaluate,
    evaluate_datasets,
    explain,
    predict,
    report,
)
from .models import MODELS, count_parameters
from .predict import Predictor, resolve_device
from .train.run import TrainResult, lr_find, train

__all__ = ["Predictor", "TrainResult", "compare", "cross_validate", "evaluate", "evaluate_datasets", "explain",
           "export", "list_augmentations", "list_datasets", "list_engines", "list_models", "lr_find",
           "paired_comparison", "predict", "report", "resolve_device", "sweep", "train"]


def export(run: Any, fmt: str = "onnx", out: Any = None, with_preprocessing: bool = False, check: bool = True,
           tolerance: float = 1e-4, min_agreement: float = 0.999, check_images: Any = None,
           progress: bool = True) -> dict[str, Any]:
    """Export a run to ONNX/TorchScript with its metadata and a parity check; see
    :func:`cnnlab.deploy.export.export_run`."""
    from .deploy.export import export_run

    return export_run(run, fmt, out, with_preprocessing, check, tolerance, min_agreement, check_images, progress)


def sweep(spec: Any, out: Any, workers: int = 1, storage: Any = None, resume: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a hyper-parameter sweep; see :func:`cnnlab.sweep.runner.run_sweep`."""
    from .sweep.runner import run_sweep

    return run_sweep(spec, out, workers=workers, storage=storage, resume=resume, progress=progress)


def list_models(num_classes: int = 10, in_chans: int = 3) -> list[dict[str, Any]]:
    """Registered models: name, parameters (at the default input size, ``in_chans`` channels and
    ``num_classes`` classes), default input size, pretrained source and description."""
    rows = []
    for name in MODELS.names():
        spec = MODELS.get(name)
        opts = {"pretrained": False} if "pretrained" in spec.options() else {}
        model = spec.builder(num_classes=num_classes, in_chans=in_chans, input_size=spec.default_input_size, **opts)
        rows.append({"name": name, "parameters": count_parameters(model)["total"],
                     "input_size": spec.default_input_size, "pretrained": spec.pretrained or "-",
                     "description": spec.description})
    return rows


def list_augmentations() -> list[dict[str, Any]]:
    """Augmentation presets and their options with defaults."""
    from .data.transforms import PRESETS, preset_options

    return [{"name": n, "options": preset_options(n)} for n in PRESETS.names()]


def list_datasets() -> list[dict[str, Any]]:
    """Built-in datasets: name, description, image size, classes."""
    return [{"name": d.name, "description": d.description, "size": d.native_size,
             "channels": d.native_channels, "classes": d.num_classes}
            for d in (DATASETS.get(n) for n in DATASETS.names())]


def list_engines() -> list[dict[str, Any]]:
    """Training engines: name and the first line of their description."""
    from .train.engines import ENGINES

    return [{"name": n, "description": (ENGINES.get(n).__doc__ or "").strip().split("\n")[0]}
            for n in ENGINES.names()]
