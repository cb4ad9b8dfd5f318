"""A run's own data: the dataset the run was trained on, with its exact saved split."""

from __future__ import annotations

from cnnlab.core.schema import Config
from cnnlab.data.pipeline import PreparedData, prepare_data
from cnnlab.models.factory import get_spec
from cnnlab.runs.store import RunFolder

__all__ = ["load_run_data"]


def load_run_data(run: RunFolder, cfg: Config, progress: bool, leaks: bool = True) -> PreparedData:
    """The run's own data with its exact saved split; refuses data that changed since. ``leaks``
    False skips the leak guard (``data.on_leak``): for readers that want only pixels (thumbnails,
    heat maps), not the test figures without the copies."""
    saved = run.read_split()
    data_cfg = cfg.data if leaks else cfg.data.model_copy(update={"on_leak": "off"})
    return prepare_data(
        data_cfg,
        get_spec(cfg.model.name),
        cfg.train.seed,
        splits=saved["indices"],
        expect_fingerprint=saved["fingerprint"],
        progress=progress,
    )
