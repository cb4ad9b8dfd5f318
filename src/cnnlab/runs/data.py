"""A run's own data: the dataset the run was trained on, with its exact saved split."""

from __future__ import annotations

from cnnlab.core.schema import Config
from cnnlab.data.pipeline import PreparedData, prepare_data
from cnnlab.models.factory import get_spec
from cnnlab.runs.store import RunFolder

__all__ = ["load_run_data"]


def load_run_data(run: RunFolder, cfg: Config, progress: bool) -> PreparedData:
    """The run's own data with its exact saved split; refuses data that changed since."""
    saved = run.read_split()
    return prepare_data(
        cfg.data,
        get_spec(cfg.model.name),
        cfg.train.seed,
        splits=saved["indices"],
        expect_fingerprint=saved["fingerprint"],
        progress=progress,
    )
