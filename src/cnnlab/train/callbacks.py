"""Trainer callbacks: history, checkpoints, early stopping, progress. They talk through `logs`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cnnlab.core.monitor import direction

if TYPE_CHECKING:
    from cnnlab.runs.store import RunFolder
    from cnnlab.train.trainer import Trainer

log = logging.getLogger(__name__)

HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


class Callback:
    """Base class: override the hooks you need. State that must survive a resume goes in
    :meth:`state_dict` / :meth:`load_state_dict`."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _improved(mode: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


class HistoryCSV(Callback):
    """Rewrites ``history.csv`` from the trainer's history after every epoch (atomically),
    so the file always matches the last checkpoint."""

    def __init__(self, run: RunFolder):
        self.run = run

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        self.run.write_history(trainer.history, HISTORY_FIELDS)


class StepLog(Callback):
    """Training loss and accuracy averaged over every ``every`` steps, rewritten to ``steps.csv``
    at each epoch end (the file matches the checkpoint, as history.csv does)."""

    def __init__(self, run: RunFolder, every: int):
        self.run, self.every = run, every
        self.rows: list[dict[str, Any]] = []
        self._loss = self._correct = 0.0
        self._n = self._steps = 0

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        self._loss += logs["batch_loss"]
        self._correct += logs["batch_correct"]
        self._n += logs["batch_size"]
        self._steps += 1
        if self._steps == self.every:
            self._flush(trainer.global_step, trainer.epoch + 1)  # trainer.epoch counts finished epochs

    def _flush(self, step: int, epoch: int) -> None:
        if self._n:
            self.rows.append(
                {"step": step, "epoch": epoch, "loss": self._loss / self._n, "acc": self._correct / self._n}
            )
        self._loss = self._correct = 0.0
        self._n = self._steps = 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        self._flush(trainer.global_step, epoch)
        self.run.write_steps(self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str, patience: int, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = direction(monitor)
        self.best: float | None = None
        self.wait = 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.monitor)
        if value is None:
            return
        if _improved(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            log.info(
                "early stopping: %s has not improved for %d epochs (best %.4f)", self.monitor, self.wait, self.best
            )
            trainer.stop_training = True
            trainer.stop_reason = f"early stopping on {self.monitor} after epoch {epoch}"

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]


class Checkpoint(Callback):
    """Writes ``best.pt`` when ``monitor`` improves and ``last.pt`` (full state) every epoch.

    Keep it last in the callback list: ``last.pt`` holds every callback's state, so the
    other callbacks must have updated theirs for the epoch first.

    Args:
        run: the run folder that writes the files.
        monitor: metric in the epoch logs.
        meta: a function returning what every checkpoint carries besides weights
            (config, classes, preprocessing), so a checkpoint alone can predict.
        engine: serialises checkpoints (``serialize``, ``checkpoint_suffix``) and gives the
            weights (``weights()``) and full state (``state_dict()``).
    """

    def __init__(self, run: RunFolder, monitor: str, meta: Callable[[], dict[str, Any]], engine: Any):
        self.run, self.engine = run, engine
        self.monitor = monitor
        self.mode = direction(monitor)
        self.meta = meta
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.monitor)
        if value is None or _improved(self.mode, value, self.best, 0.0) or self.best is None:
            self.best, self.best_epoch = value, epoch
            self._write(
                "best",
                {
                    "model": self.engine.weights(),
                    "epoch": epoch,
                    "monitor": self.monitor,
                    "value": value,
                    **self.meta(),
                },
            )
        self._write("last", {**self.engine.state_dict(), **self.meta()})

    def _write(self, which: str, obj: dict[str, Any]) -> None:
        self.run.write_checkpoint(which, self.engine.serialize(obj), self.engine.checkpoint_suffix)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class Progress(Callback):
    """A tqdm bar per epoch with running loss/accuracy, and one log line per epoch."""

    def __init__(self, enabled: bool = True, every: int = 10):
        self.enabled, self.every = enabled, every
        self.bar = None

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=trainer.steps_per_epoch,
                desc=f"epoch {epoch}/{trainer.epochs}",
                unit="batch",
                leave=False,
                dynamic_ncols=True,
            )

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            last = step == trainer.steps_per_epoch  # the final postfix is the epoch's figure, as the log line says
            if step % self.every == 0 or last:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['acc']:.4f}", refresh=last)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        val = (
            f"  val_loss {logs['val_loss']:.4f}  val_acc {logs['val_acc']:.4f}"
            if logs.get("val_loss") is not None
            else ""
        )
        log.info(
            "epoch %d/%d  train_loss %.4f  train_acc %.4f%s  (%.1fs)",
            epoch,
            trainer.epochs,
            logs["train_loss"],
            logs["train_acc"],
            val,
            logs["seconds"],
        )

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LRSchedule(Callback):
    """Steps a learning-rate scheduler per batch, per epoch, or on the monitored metric."""

    def __init__(self, scheduler: Any, interval: str, monitor: str = "val_loss"):
        self.scheduler, self.interval, self.monitor = scheduler, interval, monitor

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        # a streamed epoch can run a batch or two past its estimated length (one partial batch per
        # reading process): a one-cycle schedule then stays at its last LR instead of failing
        total = getattr(self.scheduler, "total_steps", None)
        if self.interval == "step" and (total is None or self.scheduler.last_epoch < total):
            self.scheduler.step()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.interval == "epoch":
            self.scheduler.step()
        elif self.interval == "plateau":
            value = logs.get(self.monitor)
            self.scheduler.step(value if value is not None else logs["train_loss"])

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        planned = {k: v for k, v in vars(self.scheduler).items() if k in ("total_steps", "_schedule_phases")}
        self.scheduler.load_state_dict(state["scheduler"])
        if planned and planned["total_steps"] != self.scheduler.total_steps:
            # --resume --epochs N on a one-cycle run: the cycle is re-planned for the new total and
            # continues from the step reached (the LR goes to where an N-epoch cycle is at that step)
            vars(self.scheduler).update(planned)


class FineTune(Callback):
    """fastai-style fine-tuning: a frozen backbone for ``frozen_epochs``, then everything trains.

    The optimizer holds the backbone's parameters from the start (in their own, lower-LR
    group), so unfreezing only flips ``requires_grad`` and a resume restores it exactly.
    """

    def __init__(self, frozen_epochs: int, freeze: Callable[[bool], None]):
        self.frozen_epochs, self.freeze = frozen_epochs, freeze

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        frozen = epoch <= self.frozen_epochs
        self.freeze(frozen)
        if epoch == self.frozen_epochs + 1:
            log.info("fine-tuning: backbone unfrozen from epoch %d", epoch)
