"""Run folders: layout, atomic writes, loading for evaluate/predict/resume."""

from cnnlab.core.atomic import atomic_write_json, atomic_write_text
from cnnlab.runs.store import RunFolder

__all__ = ["RunFolder", "atomic_write_json", "atomic_write_text"]
