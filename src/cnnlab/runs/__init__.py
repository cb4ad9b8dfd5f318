"""Run folders: layout, atomic writes, loading for evaluate/predict/resume."""

from .store import RunFolder, atomic_write_json, atomic_write_text

__all__ = ["RunFolder", "atomic_write_json", "atomic_write_text"]
