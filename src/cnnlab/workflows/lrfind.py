"""`cnnlab lr-find`: the learning-rate range test for a config's data and model, with its plot."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.schema import Config
from cnnlab.core.settings import LrFindSettings
from cnnlab.data.pipeline import prepare_data
from cnnlab.evaluate.plots import plot_lr_find
from cnnlab.models import get_spec
from cnnlab.models.ops import resolve_device
from cnnlab.train.build import check_model_fits
from cnnlab.train.engines import TorchEngine
from cnnlab.train.lr_find import range_test

__all__ = ["LrFound", "lr_find"]


class LrFound(BaseModel):
    """The learning rates tried, the loss at each, the suggestion (steepest descent; None when the
    loss hardly changed) and the files written."""

    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    files: list[str]


def lr_find(cfg: Config, settings: LrFindSettings | None = None, progress: bool = True) -> LrFound:
    """LR range test for the configured data and model, from ``settings.start_lr`` to ``end_lr`` over
    ``steps`` batches; writes lr_find.csv and lr_find.png into ``settings.out``."""
    st = settings or LrFindSettings()
    device = resolve_device(cfg.train.device)
    data = prepare_data(cfg.data, get_spec(cfg.model.name), cfg.data.split_seed, progress=progress)
    check_model_fits(cfg, len(data.classes), data.channels, data.input_size)
    engine = TorchEngine(cfg, data, device)  # the same build step as training
    engine.prepare(None)
    result = range_test(engine.trainer, engine.train_batches, st.start_lr, st.end_lr, st.steps)
    out = Path(st.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "lr_find.csv",
        "lr,loss\n" + "".join(f"{lr:.6g},{loss:.6g}\n" for lr, loss in zip(result["lrs"], result["losses"])),
    )
    plot_lr_find(result["lrs"], result["losses"], result["suggestion"], out / "lr_find.png")
    return LrFound(lrs=result["lrs"], losses=result["losses"], suggestion=result["suggestion"],
                   files=[str(out / "lr_find.csv"), str(out / "lr_find.png")])  # fmt: skip
