"""The one epoch loop (cnnlab.train.loop): events in order, callbacks in their declared order,
training ended by an exception that the rest of the event still sees, and a resumable state."""

from __future__ import annotations

import math

import pytest

from cnnlab.train.callbacks import Callback
from cnnlab.train.loop import EVENTS, run_epochs
from cnnlab.train.state import LoopState, StopTraining


class FakeSteps:
    """Two batches an epoch of two images each; losses and accuracies that the test chooses."""

    def __init__(self, losses=(1.0, 0.5, 0.25, 0.125), lr=0.1):
        self.losses, self._lr, self.epochs_seen, self.validated = list(losses), lr, [], 0

    def __len__(self):
        return 2

    def batches(self, epoch):
        self.epochs_seen.append(epoch)
        return [("x", "y"), ("x", "y")]

    def step(self, batch):
        loss = self.losses[(len(self.epochs_seen) - 1) % len(self.losses)]
        return loss * 2, 1, 2  # summed loss, correct, images

    def validate(self):
        self.validated += 1
        return {"loss": 0.5, "acc": 0.75, "macro_f1": 0.7}

    def lr(self):
        return self._lr

    def reduce(self, loss, correct, seen):
        return loss, correct, seen


class Recorder(Callback):
    def __init__(self, name, log, order=60):
        self.name, self.log, self.order = name, log, order

    def __getattribute__(self, attr):
        if attr in EVENTS:
            return lambda loop, *args: self.log.append((self.name, attr, args[0] if args else None))
        return super().__getattribute__(attr)


def test_events_come_in_the_declared_sequence_with_the_epoch_figures():
    log, state = [], LoopState()
    history = run_epochs(state, FakeSteps(), [Recorder("a", log)], 2)
    events = [e for _, e, _ in log]
    assert events == ["on_train_begin", "on_epoch_begin", "on_batch_end", "on_batch_end", "on_epoch_end",
                      "on_epoch_begin", "on_batch_end", "on_batch_end", "on_epoch_end", "on_train_end"]  # fmt: skip
    assert [h["epoch"] for h in history] == [1, 2] and state.epoch == 2 and state.global_step == 4
    row = history[0]
    assert row["train_loss"] == 1.0 and row["train_acc"] == 0.5 and row["val_loss"] == 0.5
    assert row["val_acc"] == 0.75 and row["val_macro_f1"] == 0.7 and row["lr"] == 0.1 and row["seconds"] >= 0
    assert state.steps_per_epoch == 2 and state.epochs == 2 and not state.stop_training


def test_callbacks_run_in_their_declared_order_and_equal_orders_keep_theirs():
    log = []
    cbs = [Recorder("late", log, 100), Recorder("first", log, 0), Recorder("b", log, 60), Recorder("c", log, 60)]
    run_epochs(LoopState(), FakeSteps(), cbs, 1)
    begin = [n for n, e, _ in log if e == "on_train_begin"]
    assert begin == ["first", "b", "c", "late"]


def test_a_callback_ends_training_by_raising_and_later_callbacks_still_see_that_epoch():
    seen = []

    class Stopper(Callback):
        order = 40

        def on_epoch_end(self, loop, epoch, logs):
            if epoch == 2:
                raise StopTraining("enough after epoch 2")

    class Last(Callback):
        order = 100

        def on_epoch_end(self, loop, epoch, logs):
            seen.append(epoch)

    state = LoopState()
    run_epochs(state, FakeSteps(), [Last(), Stopper()], 5)
    assert seen == [1, 2] and state.epoch == 2 and state.stop_reason == "enough after epoch 2"


def test_a_non_finite_training_loss_stops_with_the_reason():
    state = LoopState()
    run_epochs(state, FakeSteps(losses=(math.nan,)), [], 3)
    assert state.epoch == 1 and "training loss became nan in epoch 1" in state.stop_reason


def test_a_resumed_state_continues_after_its_epoch_and_its_state_round_trips():
    state = LoopState()
    run_epochs(state, FakeSteps(), [], 2)
    saved = state.state_dict()
    again = LoopState()
    again.load_state_dict(saved)
    steps = FakeSteps()
    run_epochs(again, steps, [], 4)
    assert steps.epochs_seen == [3, 4] and [h["epoch"] for h in again.history] == [1, 2, 3, 4]
    assert again.global_step == 8 and saved == {"epoch": 2, "global_step": 4, "history": saved["history"]}


def test_the_first_stop_reason_is_kept():
    state = LoopState()
    state.stop("one")
    state.stop("two")
    assert state.stop_reason == "one" and state.stop_training
    with pytest.raises(StopTraining, match="why"):
        raise StopTraining("why")


class NumberedSteps(FakeSteps):
    """Three batches an epoch, each named (data epoch, position): what a period was fed is visible."""

    def __init__(self):
        super().__init__()
        self.fed = []

    def __len__(self):
        return 3

    def batches(self, epoch):
        self.epochs_seen.append(epoch)
        return [(epoch, i) for i in range(3)]

    def step(self, batch):
        self.fed.append(batch)
        return 1.0, 1, 2


def test_training_by_steps_feeds_the_data_in_order_across_epochs_and_resumes_at_the_same_batch():
    """Issue 25, item 3: --steps N --eval-every K — each loop epoch is K steps, data epochs run on
    across periods; a run resumed after a period starts at the batch the uninterrupted one would."""
    whole = NumberedSteps()
    history = run_epochs(LoopState(), whole, [], epochs=4, every=2)  # 8 steps over 3-batch data epochs
    assert [h["step"] for h in history] == [2, 4, 6, 8] and whole.validated == 4
    assert whole.fed == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1)]
    first = NumberedSteps()
    state = LoopState()
    run_epochs(state, first, [], epochs=2, every=2)  # killed after step 4 ...
    resumed = NumberedSteps()
    run_epochs(state, resumed, [], epochs=4, every=2)  # ... and resumed in a new process
    assert first.fed + resumed.fed == whole.fed
