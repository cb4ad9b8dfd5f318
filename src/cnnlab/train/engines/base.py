"""What an engine is (the protocol the run's open and finish steps use) and the registry of engines:
``torch`` (engines/torch_engine.py) and ``scratch`` (engines/scratch_engine.py) register themselves
here, and the package's ``__init__`` imports each of them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cnnlab.core.registry import Registry
from cnnlab.train.callbacks import Callback

__all__ = ["ENGINES", "Engine"]


class Engine(Protocol):
    """What `train()` needs of an engine.

    Built from (config, data, device) before the run folder exists, so a model that cannot be
    built is refused before any work. ``prepare`` then makes what needs the folder's time (an
    optimizer, loaders, a feature cache) and restores a checkpoint's state when resuming.
    """

    name: str
    checkpoint_suffix: str  # ".pt" for torch; the NumPy engine will write ".npz"
    schedules: bool  # runs LR schedules (else constant LR only)
    progress: bool  # show progress bars for long preparation (feature extraction)
    epoch: int
    history: list[dict[str, Any]]
    stop_reason: str

    @staticmethod
    def load_checkpoint(path: Path) -> dict[str, Any]: ...
    def parameters(self) -> dict[str, Any]: ...
    def prepare(self, state: dict[str, Any] | None) -> dict[str, Any]: ...
    def fit(self, callbacks: Sequence[Callback], epochs: int) -> list[dict[str, Any]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def validation_logits(self, epoch: int) -> Any | None:
        """(logits, labels) of the validation split scored after ``epoch`` if still held, else None."""
        ...

    def weights(self) -> dict[str, Any]: ...
    def serialize(self, obj: dict[str, Any]) -> bytes: ...


ENGINES: Registry[Any] = Registry("engine")  # engine classes (TorchEngine, ScratchEngine)
