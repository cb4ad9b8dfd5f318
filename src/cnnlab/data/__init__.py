"""Data: sources → split → decoded uint8 tensors → batches."""

from .pipeline import PreparedData, prepare_data, resolve_input
from .sources import DATASETS

__all__ = ["DATASETS", "PreparedData", "prepare_data", "resolve_input"]
