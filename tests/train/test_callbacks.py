"""Each callback of the epoch loop on its own, with a LoopState and stand-ins for what it writes to."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch

from cnnlab.train.callbacks import (
    Checkpoint,
    EarlyStopping,
    FineTune,
    HistoryCSV,
    LRSchedule,
    MonitorCallback,
    Progress,
    StepLog,
    TimeBudget,
)
from cnnlab.train.state import LoopState, StopTraining
from cnnlab.train.threads import ThreadPolicy
from cnnlab.workflows.sweep.runner import Pruning


class FakeRun:
    """What callbacks write into: records every call instead of writing files."""

    def __init__(self):
        self.history, self.steps, self.checkpoints = None, None, []

    def write_history(self, rows, fields):
        self.history = (list(rows), fields)

    def write_steps(self, rows):
        self.steps = list(rows)

    def write_checkpoint(self, which, data, suffix):
        self.checkpoints.append((which, data, suffix))


class FakeEngine:
    checkpoint_suffix = ".pt"

    def weights(self):
        return {"w": 1}

    def state_dict(self):
        return {"epoch": 3, "everything": True}

    def serialize(self, obj):
        return obj


def _epoch(loop, epoch, **logs):
    loop.epoch = epoch
    row = {"epoch": epoch, **logs}
    loop.history.append(row)
    return row


def test_monitor_callback_reads_the_declared_direction_and_min_delta():
    low, high = MonitorCallback("val_loss", min_delta=0.1), MonitorCallback("val_acc")
    assert low.mode == "min" and high.mode == "max"
    assert low.improved(1.0) and not low.improved(math.nan)
    low.best = 1.0
    assert low.improved(0.85) and not low.improved(0.95)  # better by more than min_delta only
    high.best = 0.5
    assert high.improved(0.6) and not high.improved(0.5)
    assert low.value({"val_loss": 0.3}) == 0.3 and low.value({}) is None
    with pytest.raises(ValueError, match="no direction is declared"):
        MonitorCallback("val_wobble")


def test_history_csv_rewrites_the_whole_history_each_epoch():
    run, loop = FakeRun(), LoopState()
    cb = HistoryCSV(run)
    for e in (1, 2):
        cb.on_epoch_end(loop, e, _epoch(loop, e, train_loss=1.0 / e))
    rows, fields = run.history
    assert [r["epoch"] for r in rows] == [1, 2] and fields[0] == "epoch"


def test_step_log_averages_every_n_steps_and_survives_a_resume():
    run, loop = FakeRun(), LoopState()
    cb = StepLog(run, every=2)
    for step in range(1, 4):
        loop.global_step = step
        cb.on_batch_end(loop, step, {"batch_loss": 2.0 * step, "batch_correct": 1, "batch_size": 2})
    cb.on_epoch_end(loop, 1, {})
    assert run.steps == [{"step": 2, "epoch": 1, "loss": 1.5, "acc": 0.5}, {"step": 3, "epoch": 1, "loss": 3.0,
                                                                             "acc": 0.5}]  # fmt: skip
    again = StepLog(run, every=2)
    again.load_state_dict(cb.state_dict())
    assert again.rows == cb.rows


def test_early_stopping_raises_after_patience_epochs_without_improvement_and_resumes_its_count():
    loop, cb = LoopState(), EarlyStopping("val_loss", patience=2)
    cb.on_epoch_end(loop, 1, {"val_loss": 1.0})
    cb.on_epoch_end(loop, 2, {"val_loss": 1.1})
    saved = cb.state_dict()
    resumed = EarlyStopping("val_loss", patience=2)
    resumed.load_state_dict(saved)
    with pytest.raises(StopTraining, match="early stopping on val_loss after epoch 3"):
        resumed.on_epoch_end(loop, 3, {"val_loss": 1.2})
    cb.on_epoch_end(loop, 4, {})  # no figure this epoch: nothing changes
    assert cb.wait == 1 and cb.order < Checkpoint.order


def test_checkpoint_writes_best_on_improvement_and_last_every_epoch_and_runs_last():
    run, loop = FakeRun(), LoopState()
    cb = Checkpoint(run, "val_acc", lambda: {"classes": ["a", "b"]}, FakeEngine())
    for e, acc in ((1, 0.5), (2, 0.4), (3, 0.7)):
        cb.on_epoch_end(loop, e, {"val_acc": acc})
    kinds = [w for w, _, _ in run.checkpoints]
    assert kinds == ["best", "last", "last", "best", "last"]
    best = [d for w, d, _ in run.checkpoints if w == "best"][-1]
    assert best["epoch"] == 3 and best["value"] == 0.7 and best["classes"] == ["a", "b"] and best["model"] == {"w": 1}
    assert cb.best_epoch == 3 and cb.state_dict() == {"best": 0.7, "best_epoch": 3}
    assert Checkpoint.order > max(c.order for c in (HistoryCSV, StepLog, EarlyStopping, LRSchedule, Progress, FineTune))


def test_progress_logs_one_line_per_epoch_and_closes_its_bar(caplog):
    loop = LoopState(epochs=2, steps_per_epoch=3)
    cb = Progress(enabled=True)
    cb.on_epoch_begin(loop, 1)
    assert cb.bar is not None
    for step in (1, 2, 3):
        cb.on_batch_end(loop, step, {"loss": 0.5, "acc": 0.5})
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        cb.on_epoch_end(loop, 1, {"train_loss": 0.5, "train_acc": 0.5, "val_loss": 0.4, "val_acc": 0.6, "seconds": 1})
    assert cb.bar is None and "epoch 1/2  train_loss 0.5000  train_acc 0.5000  val_loss 0.4000" in caplog.text


def _optimizer():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    opt.step()  # a scheduler steps after its optimizer
    return opt


def test_lr_schedule_steps_per_batch_and_stops_at_the_end_of_a_one_cycle():
    opt = _optimizer()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    cb = LRSchedule(sched, "step")
    for step in range(1, 6):  # two batches more than the cycle has: no error, the last LR stays
        cb.on_batch_end(LoopState(), step, {})
    assert sched.last_epoch == 3


def test_lr_schedule_on_plateau_reads_the_monitor_or_falls_back_to_the_training_loss():
    opt = _optimizer()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5)
    cb = LRSchedule(sched, "plateau", "val_acc")
    cb.on_epoch_end(LoopState(), 1, {"val_acc": 0.5, "train_loss": 1.0})
    cb.on_epoch_end(LoopState(), 2, {"val_acc": 0.4, "train_loss": 1.0})
    assert opt.param_groups[0]["lr"] == 0.5
    epoch_cb = LRSchedule(torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "epoch")
    epoch_cb.on_epoch_end(LoopState(), 1, {})
    assert opt.param_groups[0]["lr"] == 0.25
    assert LRSchedule(sched, "plateau").load_state_dict(cb.state_dict()) is None


def test_fine_tune_freezes_for_the_first_epochs_then_unfreezes():
    calls = []
    cb = FineTune(2, calls.append)
    for e in (1, 2, 3, 4):
        cb.on_epoch_begin(LoopState(), e)
    assert calls == [True, True, False, False]


def test_thread_policy_fixes_the_threads_for_the_fit_and_restores_them():
    before = torch.get_num_threads()
    cb = ThreadPolicy(1)
    cb.on_train_begin(LoopState())
    assert torch.get_num_threads() == 1
    cb.on_train_end(LoopState())
    assert torch.get_num_threads() == before and cb.order == 0


def test_budget_guard_stops_before_an_epoch_that_would_pass_the_deadline():
    loop = LoopState(epoch=0, epochs=10)
    guard = TimeBudget(deadline=time.time() + 3600)
    guard.on_train_begin(loop)
    guard.on_epoch_end(loop, 1, {})  # plenty of time: nothing
    late = TimeBudget(deadline=time.time() - 1)
    late.on_train_begin(LoopState(epoch=4, epochs=10))  # a resumed fit counts from its own start
    with pytest.raises(StopTraining, match="time budget"):
        late.on_epoch_end(LoopState(epochs=10), 5, {})
    late.on_epoch_end(LoopState(epochs=10), 10, {})  # the planned last epoch: nothing to stop


def test_pruning_reports_to_the_trial_and_stops_when_it_says_so():
    class Trial:
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((value, step))

        def should_prune(self):
            return len(self.reports) >= 2

    trial = Trial()
    cb = Pruning(trial, "val_acc")
    cb.on_epoch_end(LoopState(epochs=5), 1, {"val_acc": 0.5})
    cb.on_epoch_end(LoopState(epochs=5), 2, {"val_acc": math.nan})  # not finite: not reported
    with pytest.raises(StopTraining, match="pruned by the sweep after epoch 3"):
        cb.on_epoch_end(LoopState(epochs=5), 3, {"val_acc": 0.6})
    assert trial.reports == [(0.5, 1), (0.6, 3)] and cb.pruned
    # issue 46: a trial that reached its last epoch trained in full; it completes, never "pruned"
    last = Pruning(trial, "val_acc")
    last.on_epoch_end(LoopState(epochs=4), 4, {"val_acc": 0.7})
    assert trial.reports[-1] == (0.7, 4) and trial.should_prune() and not last.pruned


def finished(tmp_path):
    """A finished run's figures as the trackers get them: metrics, a confusion picture, the report."""
    from cnnlab.evaluate.plots import plot_confusion
    from cnnlab.train.trackers import Finished

    metrics = {"split": "test", "accuracy": 0.75, "macro_f1": 0.7, "confusion_matrix": [[3, 1], [1, 3]],
               "per_class": {"cat": {"f1": 0.75}, "dog": {"f1": 0.65}}, "best_epoch": 2}  # fmt: skip
    png = plot_confusion(metrics["confusion_matrix"], ["cat", "dog"], tmp_path / "cm.png")
    report = tmp_path / "report.html"
    report.write_text("<html>the report</html>")
    return Finished(metrics, 2, png, [report])


def test_tensorboard_writes_one_scalar_per_metric_per_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnnlab.train.trackers import TensorBoard

    class Run:
        def tracker_path(self, name):
            return tmp_path / name

    cb = TensorBoard(Run(), {"model": {"name": "cnn"}})
    cb.on_train_begin(LoopState())
    cb.on_epoch_end(LoopState(), 1, {"epoch": 1, "train_loss": 0.5, "val_acc": 0.7, "lr": 0.1})
    cb.finish(finished(tmp_path))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"train/loss", "val/acc", "lr", "test/accuracy", "test/f1/dog"} <= set(events.Tags()["scalars"])
    assert events.Scalars("test/f1/dog")[0].value == pytest.approx(0.65)
    (image,) = events.Images("confusion_matrix")  # the picture itself, read back from the event file
    assert image.step == 2 and image.width > 100 and image.encoded_image_string[:4] == b"\x89PNG"


class _TrackedRun:
    """What a tracker callback asks of a run folder."""

    def __init__(self, root):
        self.path, self.status_fields = root, {}
        self.run_json = root / "run.json"

    def tracker_path(self, name):
        return self.path / name

    def status(self):
        return self.status_fields

    def update_status(self, **fields):
        self.status_fields.update(fields)


def test_mlflow_logs_params_once_and_metrics_per_epoch(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from cnnlab.train.trackers import MLflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = _TrackedRun(tmp_path)
    cb = MLflow(run, {"optim": {"lr": 0.01}})
    for e in (1, 2):
        cb.on_epoch_end(LoopState(), e, {"epoch": e, "train_loss": 1.0 / e, "val_acc": 0.5 + e / 10})
    cb.finish(finished(tmp_path))
    client = MlflowClient(run.status_fields["mlflow_tracking_uri"])
    logged = client.get_run(run.status_fields["mlflow_run_id"])
    assert logged.data.params["optim.lr"] == "0.01" and logged.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_acc")] == [1, 2]
    assert logged.data.metrics["test_accuracy"] == 0.75 and logged.data.metrics["test_f1/cat"] == 0.75
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} == {"report.html", "cm.png"}
    back = client.download_artifacts(logged.info.run_id, "report.html", str(tmp_path / "back"))
    assert open(back).read() == "<html>the report</html>"
    assert (tmp_path / "mlflow-artifacts").is_dir()  # inside the run, not ./mlruns


def test_wandb_logs_each_epoch_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from cnnlab.train.trackers import WandB

    monkeypatch.setenv("WANDB_MODE", "offline")
    cb = WandB(_TrackedRun(tmp_path), {"optim": {"lr": 0.01}})
    cb.on_epoch_end(LoopState(), 1, {"epoch": 1, "train_loss": 0.5})
    cb.finish(finished(tmp_path))
    assert any((tmp_path / "wandb").rglob("*.wandb"))
    assert any((tmp_path / "wandb").rglob("media/images/confusion_matrix*.png"))
    deadline = time.time() + 20  # finish() returns once queued: wandb's service may still be writing the file
    while True:
        log = b"".join(f.read_bytes() for f in (tmp_path / "wandb").rglob("*.wandb"))  # the offline record
        if (b"test/f1/dog" in log and b"-results" in log) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert b"test/f1/dog" in log and b"-results" in log  # the summary's figures and the results artifact
