"""Callbacks of the epoch loop (train/loop.py): history, per-step log, early stopping, checkpoints,
progress, LR schedules, fine-tuning. Each reads the :class:`~cnnlab.train.state.LoopState` it is
given and the epoch's ``logs``; one that wants training to end raises ``StopTraining``. The
monitored ones share :class:`MonitorCallback`, which reads the metric's direction from the one
table (``cnnlab.core.monitor``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cnnlab.core.monitor import direction
from cnnlab.train.state import LoopState, StopTraining

if TYPE_CHECKING:
    from cnnlab.runs.store import RunFolder

log = logging.getLogger(__name__)

HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


class Callback:
    """Base class: override the hooks you need (the loop's ``EVENTS``). State that must survive a
    resume goes in :meth:`state_dict` / :meth:`load_state_dict`, saved in checkpoints under
    :attr:`key`. Callbacks run in ascending :attr:`order` (equal orders in the order given)."""

    order = 60  # engines' own callbacks run first, the checkpoint last

    @property
    def key(self) -> str:
        """The stable name this callback's state is saved under in a checkpoint."""
        return type(self).__name__

    def on_train_begin(self, loop: LoopState) -> None: ...
    def on_epoch_begin(self, loop: LoopState, epoch: int) -> None: ...
    def on_batch_end(self, loop: LoopState, step: int, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, loop: LoopState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TimeBudget(Callback):
    """Stops training at an epoch (or validation period) end when one more would pass the
    deadline, judged by the mean length of this fit's epochs so far; the planned last epoch is not
    stopped. ``deadline`` is a ``time.time()``; with ``seconds`` instead, the deadline is that long
    after the first ``on_train_begin`` (a fine-tune's two phases share it)."""

    order = 5  # before the checkpoint, which then keeps the best as usual

    def __init__(self, deadline: float | None = None, seconds: float | None = None, what: str = "the time budget"):
        self.deadline, self.seconds, self.what = deadline, seconds, what
        self.started = time.time()
        self.first = 0  # the epoch this fit started after (a resumed run's)

    def on_train_begin(self, loop: LoopState) -> None:
        self.started, self.first = time.time(), loop.epoch
        if self.deadline is None and self.seconds is not None:
            self.deadline = self.started + self.seconds

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        took = max(1e-6, (time.time() - self.started) / max(1, epoch - self.first))
        last = epoch >= (loop.epochs or epoch + 1)  # the planned end: nothing to stop
        if self.deadline is None or loop.stop_training or last:
            return
        # the epochs that fit, by the mean so far: the fit is planned to end there (a one-cycle schedule
        # anneals to it), shortened again whenever epochs turn out slower
        fits = epoch + max(0, int((self.deadline - time.time()) // took))
        if fits < (loop.budget_end or loop.epochs):
            if not loop.budget_end:
                log.info("%s%s leaves room for about %d of %d epochs: the fit is planned to end there",
                         self.what[:1].upper(), self.what[1:], fits, loop.epochs)  # fmt: skip
            loop.budget_end = fits
        if time.time() + took > self.deadline or epoch == loop.budget_end:
            log.warning("stopping after epoch %d to keep within %s", epoch, self.what)
            raise StopTraining(f"{self.what} (after epoch {epoch})")


class MonitorCallback(Callback):
    """A callback that watches one metric of the epoch logs: whether it improved on the best value
    so far by more than ``min_delta``, in the metric's declared direction (never guessed)."""

    def __init__(self, monitor: str, min_delta: float = 0.0):
        self.monitor, self.min_delta = monitor, min_delta
        self.mode = direction(monitor)
        self.best: float | None = None

    def value(self, logs: dict[str, float]) -> float | None:
        """The monitored metric in ``logs``, or None when the epoch has none."""
        return logs.get(self.monitor)

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (a first finite value always does)."""
        best = self.best
        if best is None or math.isnan(best):
            return not math.isnan(value)
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


class HistoryCSV(Callback):
    """Rewrites ``history.csv`` from the loop's history after every epoch (atomically),
    so the file always matches the last checkpoint."""

    order = 30

    def __init__(self, run: RunFolder):
        self.run = run

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        self.run.write_history(loop.history, HISTORY_FIELDS)


class StepLog(Callback):
    """Training loss and accuracy averaged over every ``every`` steps, rewritten to ``steps.csv``
    at each epoch end (the file matches the checkpoint, as history.csv does)."""

    order = 30

    def __init__(self, run: RunFolder, every: int):
        self.run, self.every = run, every
        self.rows: list[dict[str, Any]] = []
        self._loss = self._correct = 0.0
        self._n = self._steps = 0

    def on_batch_end(self, loop: LoopState, step: int, logs: dict[str, float]) -> None:
        self._loss += logs["batch_loss"]
        self._correct += logs["batch_correct"]
        self._n += int(logs["batch_size"])
        self._steps += 1
        if self._steps == self.every:
            self._flush(loop.global_step, loop.epoch + 1)  # loop.epoch counts finished epochs

    def _flush(self, step: int, epoch: int) -> None:
        if self._n:
            self.rows.append(
                {"step": step, "epoch": epoch, "loss": self._loss / self._n, "acc": self._correct / self._n}
            )
        self._loss = self._correct = 0.0
        self._n = self._steps = 0

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        self._flush(loop.global_step, epoch)
        self.run.write_steps(self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    order = 40

    def __init__(self, monitor: str, patience: int, min_delta: float = 0.0):
        super().__init__(monitor, min_delta)
        self.patience = patience
        self.wait = 0

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        value = self.value(logs)
        if value is None:
            return
        if self.improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            log.info(
                "early stopping: %s has not improved for %d epochs (best %.4f)", self.monitor, self.wait, self.best
            )
            raise StopTraining(f"early stopping on {self.monitor} after epoch {epoch}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]


class Checkpoint(MonitorCallback):
    """Writes ``best.pt`` when ``monitor`` improves and ``last.pt`` (full state) every epoch.

    It runs last (``order`` 100): ``last.pt`` holds every callback's state, so the other
    callbacks must have updated theirs for the epoch first.

    Args:
        run: the run folder that writes the files.
        monitor: metric in the epoch logs.
        meta: a function returning what every checkpoint carries besides weights
            (config, classes, preprocessing), so a checkpoint alone can predict.
        engine: serialises checkpoints (``serialize``, ``checkpoint_suffix``) and gives the
            weights (``weights()``) and full state (``state_dict()``).
    """

    order = 100

    def __init__(self, run: RunFolder, monitor: str, meta: Callable[[], dict[str, Any]], engine: Any):
        super().__init__(monitor)
        self.run, self.engine = run, engine
        self.meta = meta
        self.best_epoch: int | None = None

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        value = self.value(logs)
        if value is None or self.improved(value) or self.best is None:
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

    order = 20

    def __init__(self, enabled: bool = True, every: int = 10):
        self.enabled, self.every = enabled, every
        self.bar = None

    def on_epoch_begin(self, loop: LoopState, epoch: int) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=loop.steps_per_epoch,
                desc=f"epoch {epoch}/{loop.epochs}",
                unit="batch",
                leave=False,
                dynamic_ncols=True,
            )

    def on_batch_end(self, loop: LoopState, step: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            last = step == loop.steps_per_epoch  # the final postfix is the epoch's figure, as the log line says
            if step % self.every == 0 or last:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['acc']:.4f}", refresh=last)

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
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
            loop.epochs,
            logs["train_loss"],
            logs["train_acc"],
            val,
            logs["seconds"],
        )

    def on_train_end(self, loop: LoopState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


ONE_CYCLE_PLAN = ("total_steps", "_schedule_phases")  # what OneCycleLR plans at construction


class LRSchedule(MonitorCallback):
    """Steps a learning-rate scheduler per batch, per epoch, or on the monitored metric (plateau:
    the scheduler was built with the metric's direction, ``train.optim.build_schedule``)."""

    order = 10

    def __init__(self, scheduler: Any, interval: str, monitor: str = "val_loss"):
        super().__init__(monitor)
        self.scheduler, self.interval = scheduler, interval

    def on_epoch_begin(self, loop: LoopState, epoch: int) -> None:
        total = getattr(self.scheduler, "total_steps", None)
        if loop.budget_end and self.interval == "step" and total is not None:
            wanted = loop.budget_end * loop.steps_per_epoch  # a time budget re-planned the fit: end the cycle there
            if wanted < total and self.scheduler.last_epoch < wanted:
                self._replan(wanted)

    def _replan(self, total_steps: int) -> None:
        """The one-cycle schedule planned anew for ``total_steps``, continuing from the step reached
        (as ``--resume --epochs N`` does): a fresh scheduler over the same optimizer gives the plan."""
        s = self.scheduler
        groups = s.optimizer.param_groups
        now = [{k: g[k] for k in ("lr", "betas", "momentum") if k in g} for g in groups]
        fresh = type(s)(s.optimizer, max_lr=[g["max_lr"] for g in groups], total_steps=total_steps)
        for g, kept in zip(groups, now, strict=True):
            g.update(kept)  # the fresh scheduler's first step set the LR: this step's stays
        vars(s).update({k: v for k, v in vars(fresh).items() if k in ONE_CYCLE_PLAN})

    def on_batch_end(self, loop: LoopState, step: int, logs: dict[str, float]) -> None:
        # a streamed epoch can run a batch or two past its estimated length (one partial batch per
        # reading process): a one-cycle schedule then stays at its last LR instead of failing
        total = getattr(self.scheduler, "total_steps", None)
        if self.interval == "step" and (total is None or self.scheduler.last_epoch < total):
            self.scheduler.step()

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        if self.interval == "epoch":
            self.scheduler.step()
        elif self.interval == "plateau":
            value = self.value(logs)
            self.scheduler.step(value if value is not None else logs["train_loss"])

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        planned = {k: v for k, v in vars(self.scheduler).items() if k in ONE_CYCLE_PLAN}
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

    order = 5

    def __init__(self, frozen_epochs: int, freeze: Callable[[bool], None]):
        self.frozen_epochs, self.freeze = frozen_epochs, freeze

    def on_epoch_begin(self, loop: LoopState, epoch: int) -> None:
        frozen = epoch <= self.frozen_epochs
        self.freeze(frozen)
        if epoch == self.frozen_epochs + 1:
            log.info("fine-tuning: backbone unfrozen from epoch %d", epoch)
