"""Data: sources → split → decoded uint8 tensors → batches.

The names below load on first use, so that ``cnnlab.data.images`` (decoding only, no PyTorch)
can be imported by the ONNX predictor in a process without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"PreparedData": ".pipeline", "prepare_data": ".pipeline", "resolve_input": ".pipeline",
         "DATASETS": ".sources"}

__all__ = ["DATASETS", "PreparedData", "prepare_data", "resolve_input"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
