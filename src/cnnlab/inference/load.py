"""One loader for everything that predicts: a run folder (its best checkpoint, through PyTorch) or
an exported model file (ONNX Runtime, no PyTorch).

A run folder's Predictor is looked up in ``BACKENDS`` and imported on first use: this is one of
the two places where cnnlab imports its own code by name (the other is ``cnnlab.api``), so that
predicting with an .onnx file never loads PyTorch. tests/test_architecture.py reads the table as
import edges of this module.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.core.errors import CnnlabError
from cnnlab.inference.exported import ExportedModel, is_exported_file

if TYPE_CHECKING:  # for the type checker only: loading an .onnx file imports no PyTorch
    from cnnlab.inference.predictor import Predictor

__all__ = ["BACKENDS", "load_model"]

BACKENDS = {"run": "cnnlab.inference.predictor"}  # kind of model → the module that loads it (PyTorch)


def load_model(
    spec: str, device: str = "auto", max_pixels: int | None = None, trust_torchscript: bool = False, tta: str = "none"
) -> Predictor | ExportedModel:
    """An exported model file (.onnx needs no PyTorch; a TorchScript file only with
    ``trust_torchscript`` or when this machine's cnnlab exported it) or a run folder's Predictor
    (with ``tta``, test-time augmentation)."""
    if is_exported_file(spec):
        if tta != "none":
            raise CnnlabError(f"--tta runs on a run folder's model; {spec} predicts as it was exported")
        model = ExportedModel.load(spec, trust_torchscript=trust_torchscript)
        if max_pixels is not None:
            model.preprocess = dataclasses.replace(model.preprocess, max_pixels=max_pixels)
        return model
    if Path(spec).is_file():
        raise CnnlabError(f"{spec}: not a run folder or a model file cnnlab can load (.onnx, .ts)")
    predictor: type[Predictor] = importlib.import_module(BACKENDS["run"]).Predictor
    return predictor.from_run(spec, device, max_pixels=max_pixels, tta=tta)
