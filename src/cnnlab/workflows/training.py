"""cnnlab train and lr-find: a config → a complete run folder, in three steps: open the run
(new or resumed, locked), run an engine, finish the run (test metrics, metrics.json last,
status, report)."""

from __future__ import annotations

import contextlib
import logging
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from cnnlab import __version__
from cnnlab.core.errors import CnnlabError, DiskError
from cnnlab.core.monitor import monitorable
from cnnlab.core.schema import Config, build_config
from cnnlab.core.state import SeedsState
from cnnlab.data.pipeline import PreparedData, prepare_data
from cnnlab.evaluate.plots import plot_confusion
from cnnlab.inference.predictor import Predictor
from cnnlab.models import get_spec
from cnnlab.models.ops import resolve_device
from cnnlab.runs.data import load_run_data
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.store import NullRunFolder, RunFolder, now
from cnnlab.train import distributed
from cnnlab.train.batchsize import auto_batch_size
from cnnlab.train.build import build_model, check_model_fits, resolve_fine_tune, resolve_periods, resolve_recipe
from cnnlab.train.callbacks import Callback, Checkpoint, EarlyStopping, HistoryCSV, Progress, StepLog, TimeBudget
from cnnlab.train.engines import ENGINES, Engine
from cnnlab.train.trackers import Finished, check_trackers, finish_trackers, tracker_callbacks
from cnnlab.train.trainer import autocast_dtype
from cnnlab.workflows.evaluation import evaluate_checkpoint, write_run_report

log = logging.getLogger(__name__)

TIMED = ("data_seconds", "train_seconds", "eval_seconds")  # with the feature cache's seconds: the run's time


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run: the run folder.
        history: one dict per epoch.
        metrics: the test-split evaluation of the best checkpoint (also in metrics.json).
        stop_reason: why training stopped.
        monitor: the metric that chose the best checkpoint (a validation figure, or the
            training loss when there is no validation split).
        best_value: its best value, and ``best_epoch`` the epoch it was reached: what a sweep
            tunes on (never the test metrics).
        test_set_note: the test-set ledger's warning when this test split has been scored more
            than once (by this and other runs).
        seeds: for a seed group (:func:`cnnlab.workflows.seeded.train_seeds`), its seeds.json (every
            seed's figures and the mean ± sd of each test metric); ``run`` is then the group folder
            and ``metrics`` the means.
    """

    run: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    stop_reason: str
    monitor: str = "val_loss"
    best_value: float | None = None
    best_epoch: int | None = None
    test_set_note: str | None = None  # how often this test split was scored before, when more than once
    seeds: SeedsState | None = None


@dataclass
class OpenRun:
    """A run ready for its engine: the locked folder, the config, data, device and engine."""

    run: RunFolder
    cfg: Config
    data: PreparedData
    device: torch.device
    engine: Engine
    resumed_from: int | None = None
    trackers: list[Callback] = field(default_factory=list)  # --logger: finished with the run


def train(
    cfg: Config | None,
    *,
    resume: str | Path | None = None,
    epochs: int | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    splits: dict[str, Any] | None = None,
    hold_out_test: bool = False,
) -> TrainResult:
    """Train a model and write a complete run folder.

    Args:
        cfg: the resolved config (ignored when resuming: the run's own config is used).
        resume: a run folder to continue from its last checkpoint.
        epochs: with ``resume``, a new total number of epochs (to extend a run).
        overwrite: replace an existing run folder at ``cfg.run.out`` (only a cnnlab run no
            process holds).
        callbacks: extra callbacks, called before checkpointing at each event.
        progress: show progress bars.
        splits: the exact train/val/test indices to use (cross-validation folds) instead of the
            config's split; a fold without a test part is evaluated on its validation part.
        hold_out_test: train on the config's split without its test part (sweep trials): the
            run is evaluated on its validation part and never reads a test image.

    Returns:
        The run folder, the per-epoch history, test metrics, why training stopped and the
        best validation value of the monitored metric.

    Raises:
        CnnlabError: bad input, found before training starts wherever possible; a full disk.
        KeyboardInterrupt: after marking the run 'interrupted' (resume it later).
    """
    opened = open_run(
        cfg,
        resume=resume,
        epochs=epochs,
        overwrite=overwrite,
        progress=progress,
        splits=splits,
        hold_out_test=hold_out_test,
    )
    try:
        with recorded_failures(opened):
            fit(opened, callbacks, progress)
            result = finish_run(opened, progress)
            distributed.shutdown(wait=True)
            return result
    finally:
        opened.run.unlock()
        distributed.shutdown()


def train_or_resume(
    cfg: Config,
    *,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    splits: dict[str, Any] | None = None,
    hold_out_test: bool = False,
) -> TrainResult | None:
    """The one resume-or-start of a run inside a folder of runs (a CV fold, a study candidate):
    the run at ``cfg.run.out`` that finished is kept (None); one interrupted after an epoch is
    resumed, with the same ``callbacks``; one never started, or stopped before its first epoch
    ended, is started (again)."""
    run = RunFolder(str(cfg.run.out))
    if run.metrics_json.is_file() and run.state().status == "completed":
        return None
    if run.last_ckpt.is_file():
        return train(None, resume=run.path, progress=progress, callbacks=callbacks)
    return train(cfg, overwrite=run.path.exists(), progress=progress, callbacks=callbacks, splits=splits,
                 hold_out_test=hold_out_test)  # fmt: skip


def open_run(
    cfg: Config | None,
    *,
    resume: str | Path | None,
    epochs: int | None,
    overwrite: bool,
    progress: bool,
    splits: dict[str, Any] | None = None,
    hold_out_test: bool = False,
) -> OpenRun:
    """Check everything that needs no pixels, load the data, build the engine; only then make
    (or, resuming, reuse) the run folder, held under its lock, with status 'running'."""
    state = None
    rank_device = distributed.init(cfg.train.device if cfg is not None else "auto")  # None outside torchrun
    writer = RunFolder if distributed.is_main() else NullRunFolder  # under torchrun only rank 0 writes
    if resume is not None:
        run, cfg, state = _resumable(resume, epochs, writer)
    else:
        if cfg is None:
            raise CnnlabError("train needs a config, or a run folder to resume")
        run, cfg = _new_run(cfg, writer, overwrite)
    made = False  # a new run folder exists: a failure from here on is written into its run.json
    try:
        started = time.perf_counter()
        device = rank_device or resolve_device(cfg.train.device)
        if state:
            data = load_run_data(run, cfg, progress)
        else:
            spec = get_spec(cfg.model.name)
            data = prepare_data(cfg.data, spec, cfg.data.split_seed, splits=splits, progress=progress,
                                hold_out_test=hold_out_test)  # fmt: skip
        cfg = _resolved_for(cfg, data, device, fresh=state is None)
        engine: Engine = ENGINES.get(cfg.train.engine)(cfg, data, device)
        engine.progress = progress
        if state is None:
            run.create(overwrite=overwrite)
            made = True
            announce_board(run.path.parent)
            run.write_config(cfg)
            run.write_dataset(data.summary(), data.fingerprint(), data.splits, data.images_id())
            if data.leaks and data.leaks["pairs"]:
                run.write_leaks(data.leaks)
        elif epochs:
            run.write_config(cfg)
        _log_summary(data, engine, cfg, device)
        _mark_running(run, cfg, engine, device, state, time.perf_counter() - started)
    except BaseException as e:
        if made:
            _record_stop(run, e, epochs_done=0)
        run.unlock()
        raise
    return OpenRun(run, cfg, data, device, engine, state["epoch"] if state else None)


_ANNOUNCED: list[Path] = []  # the board command is said once per process (a CV's folds, a study's runs)


def announce_board(folder: Path) -> None:
    """Say, once per process and only once a folder really exists (not before a one-line error),
    which command shows the work live."""
    if not _ANNOUNCED and distributed.is_main():
        _ANNOUNCED.append(folder)
        log.info("watch it live: cnnlab board %s", folder)


def _new_run(cfg: Config, writer: type[RunFolder], overwrite: bool) -> tuple[RunFolder, Config]:
    """The new run's folder (named after the model, data and time unless given), checked before
    any decoding, and the config that names it."""
    out = cfg.run.out or f"runs/{cfg.model.name}-{Path(cfg.data.source).name}-{datetime.now():%Y%m%d-%H%M%S}"
    out = str(distributed.broadcast(out))
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": out})})
    run = writer(out)
    if distributed.is_main():
        run.check_new(overwrite)
    return run, cfg


def _resolved_for(cfg: Config, data: PreparedData, device: torch.device, fresh: bool) -> Config:
    """``cfg`` with what depends on the data and the device settled: the monitor and trackers
    checked, fine-tuning phases and (for a new run) the batch size of --batch-size auto and the
    default recipe planned, the input size chosen, the model's fit in memory checked."""
    _check_monitor(cfg.train.monitor, data.multilabel)
    check_trackers(cfg.run.loggers)
    cfg = resolve_fine_tune(cfg, len(data.splits["train"]))
    if fresh and cfg.train.auto_batch:
        size, why = auto_batch_size(
            lambda: build_model(cfg, len(data.classes), data.channels, data.input_size), data.channels, data.input_size,
            len(data.classes), device if cfg.train.engine == "torch" else torch.device("cpu"),
            autocast_dtype(cfg.train.precision, device), len(data.splits["train"]),
            cfg.train.batch_size,
        )  # fmt: skip
        log.info(why)
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": size})})
    if fresh:
        cfg = resolve_recipe(cfg, len(data.splits["train"]), ENGINES.get(cfg.train.engine).schedules)
        cfg = resolve_periods(cfg, len(data.splits["train"]))
    if cfg.data.input_size is None:  # the size chosen from the data is part of the resolved config
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"input_size": data.input_size})})
    check_model_fits(cfg, len(data.classes), data.channels, data.input_size)
    return cfg


def _mark_running(run: RunFolder, cfg: Config, engine: Engine, device: torch.device,
                  state: dict[str, Any] | None, data_seconds: float) -> None:  # fmt: skip
    """run.json says 'running', with the versions, device, engine and parameters; then the engine
    prepares (optimizer, loaders, feature cache, a checkpoint's state) and adds what it measured."""
    run.update_status(
        status="running",
        started=now(),
        cnnlab=__version__,
        torch=torch.__version__,
        python=platform.python_version(),
        device=str(device),
        engine=engine.name,
        parameters=engine.parameters(),
        report_wanted=cfg.run.report,
        data_seconds=round(data_seconds, 1),
        **({"resumed_from_epoch": state["epoch"]} if state else {}),
    )
    facts = engine.prepare(state)
    if facts:
        run.update_status(**facts)


def _resumable(
    path: str | Path, epochs: int | None, writer: type = RunFolder
) -> tuple[RunFolder, Config, dict[str, Any]]:
    """The locked run, its config (with a new epoch total) and its last checkpoint's state."""
    run = writer(path).require(checkpoint=False)
    run.lock("resume it")
    try:
        run.require()
        cfg = run.read_config()
        if epochs:
            cfg = build_config(cfg.model_dump(mode="json"), {"train.epochs": epochs}, source=str(run.config))
        engine_cls = ENGINES.get(cfg.train.engine)
        last = run.checkpoint("last", engine_cls.checkpoint_suffix)
        if not last.is_file():
            raise CnnlabError(f"run folder {str(run.path)!r} has no {last.relative_to(run.path)} to resume from")
        state = engine_cls.load_checkpoint(last)
        if state["epoch"] >= cfg.train.epochs and run.state().status == "completed":
            raise CnnlabError(
                f"run {str(run.path)!r} already finished {state['epoch']} epochs; "
                "pass --epochs N with a larger N to extend it"
            )
    except BaseException:
        run.unlock()
        raise
    return run, cfg, state


@contextlib.contextmanager
def recorded_failures(o: OpenRun) -> Iterator[None]:
    """Whatever stops the run is written into run.json with its next step: Ctrl-C or SIGTERM
    ('interrupted'), a full disk or any other error ('failed')."""
    try:
        yield
    except BaseException as e:
        _record_stop(o.run, e, o.engine.epoch)
        if isinstance(e, KeyboardInterrupt):
            epoch = o.engine.epoch
            log.warning("interrupted after epoch %d; continue with: cnnlab train --resume %s", epoch, o.run.path)
        if isinstance(e, DiskError):
            raise CnnlabError(f"{e}; then continue with: cnnlab train --resume {o.run.path}") from None
        raise


def _record_stop(run: RunFolder, e: BaseException, epochs_done: int) -> None:
    """run.json says why the run stopped: 'interrupted' (Ctrl-C, SIGTERM) or 'failed' with the error."""
    if isinstance(e, KeyboardInterrupt):
        _try_status(run, status="interrupted", stopped=now(), epochs_done=epochs_done)
    else:
        error = str(e) if isinstance(e, DiskError) else repr(e)[:500]
        _try_status(run, status="failed", stopped=now(), epochs_done=epochs_done, error=error)


def _try_status(run: RunFolder, **fields: Any) -> None:
    try:  # on a full disk even run.json may not be writable; the lock then tells the truth
        run.update_status(**fields)
    except DiskError:
        pass


def fit(o: OpenRun, extra: Sequence[Callback], progress: bool) -> None:
    """Run the engine with the run's callbacks; the checkpoint callback goes last."""
    cfg, run, data = o.cfg, o.run, o.data
    has_val = len(data.splits["val"]) > 0
    cbs: list[Callback] = [Progress(enabled=progress), HistoryCSV(run), StepLog(run, cfg.train.log_every)]
    if cfg.train.patience:
        cbs.append(EarlyStopping(cfg.train.monitor, cfg.train.patience, cfg.train.min_delta))
    if cfg.train.time:
        cbs.append(TimeBudget(seconds=cfg.train.time, what=f"the --time budget of {cfg.train.time:g} s"))
    meta = checkpoint_meta(cfg, data, o.engine.name)
    o.trackers = tracker_callbacks(cfg.run.loggers, run, cfg.model_dump(mode="json"))
    cbs += o.trackers
    cbs += list(extra)
    cbs.append(Checkpoint(run, cfg.train.monitor if has_val else "train_loss", lambda: meta, o.engine))
    if o.resumed_from is not None:
        log.info("resuming %s after epoch %d of %d", run.path, o.resumed_from, cfg.train.epochs)
    run.clear_metrics()  # its presence means "finished": not while training
    try:
        o.engine.fit(cbs, cfg.train.epochs)
    except BaseException:
        finish_trackers(o.trackers, None)  # the tracker's run is marked failed
        raise


def checkpoint_meta(cfg: Config, data: PreparedData, engine: str) -> dict[str, Any]:
    """What every checkpoint carries besides weights, so that a checkpoint alone can predict."""
    return {
        "config": cfg.model_dump(mode="json"),
        "classes": data.classes,
        "multilabel": data.multilabel,
        "engine": engine,
        "preprocess": {
            "input_size": data.input_size,
            "channels": data.channels,
            "mean": data.mean,
            "std": data.std,
            "normalize": data.normalize,
            "interpolation": get_spec(cfg.model.name).interpolation,
        },
    }


def finish_run(o: OpenRun, progress: bool) -> TrainResult:
    """Evaluate the best checkpoint on the test split once, write metrics.json last, mark the run
    completed, and write its report."""

    cfg, run, engine = o.cfg, o.run, o.engine
    if not distributed.is_main():  # rank 0 evaluates and writes; the other ranks are done
        return TrainResult(run.path, engine.history, {}, engine.stop_reason)
    started = time.perf_counter()
    predictor = Predictor.from_run(run, o.device, warn=False)  # the best checkpoint, loaded once for both
    metrics = evaluate_checkpoint(
        run,
        o.data,
        o.device,
        cfg.train.batch_size,
        save=True,
        predictor=predictor,
        progress=progress,
        val_logits=engine.validation_logits(predictor.epoch) if predictor.epoch is not None else None,
        calibrate=cfg.train.calibrate == "temperature",
    )
    best = next((h for h in engine.history if h["epoch"] == metrics["best_epoch"]), {})
    monitor = cfg.train.monitor if len(o.data.splits["val"]) else "train_loss"
    run.write_metrics(metrics)
    done = {
        "status": "completed",
        "finished": now(),
        "epochs_done": engine.epoch,
        "stop_reason": engine.stop_reason or "completed all epochs",
        "train_seconds": round(sum(h["seconds"] for h in engine.history), 1),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "best_epoch": metrics["best_epoch"],
    }
    timing = {**run.status(), **done}  # data_seconds and the feature cache's were recorded when the run opened
    run.update_status(
        **done,
        total_seconds=round(
            sum(timing.get(k) or 0 for k in TIMED) + (timing.get("feature_cache") or {}).get("seconds", 0), 1
        ),
    )
    if cfg.run.report:
        try:
            log.info(
                "report: %s",
                write_run_report(run, o.data, str(o.device), progress, predictor),
            )
        except CnnlabError as e:  # the trained run stands; the report can be made again
            log.warning("the report could not be written (%s); retry with: cnnlab report %s", e, run.path)
        except Exception as e:
            log.warning(
                "the report could not be written (%s: %s); retry with: cnnlab report %s", type(e).__name__, e, run.path
            )
    if o.trackers:
        _finish_trackers(o, metrics)
    note = use_sentence(run.test_split_id()) if metrics.get("split") == "test" else None
    return TrainResult(
        run.path, engine.history, metrics, engine.stop_reason, monitor, best.get(monitor), metrics["best_epoch"], note
    )


def _finish_trackers(o: OpenRun, metrics: dict[str, Any]) -> None:
    """The evaluated run to its trackers: the figures, a confusion-matrix picture, the files."""
    run = o.run
    files = [p for p in (run.metrics_json, run.path / "report.html") if p.is_file()]
    if o.cfg.run.log_checkpoint:
        files.append(run.best_ckpt)
    with tempfile.TemporaryDirectory(prefix="cnnlab-trackers-") as tmp:
        png = None
        if "confusion_matrix" in metrics:
            png = plot_confusion(metrics["confusion_matrix"], o.data.classes, Path(tmp) / "confusion_matrix.png")
        finish_trackers(o.trackers, Finished(metrics, metrics.get("best_epoch") or o.engine.epoch, png, files))


def _check_monitor(monitor: str, multilabel: bool) -> None:
    """A monitored metric must exist for this kind of data: found before the run folder is made."""
    kind = monitorable().get(monitor.removeprefix("val_").removeprefix("train_"), ("any", ""))[0]
    if kind != "any" and (kind == "multi-label") != multilabel:
        raise CnnlabError(
            f"train.monitor {monitor!r} is defined for {kind} data; this dataset is "
            f"{'multi' if multilabel else 'single'}-label"
        )


def _log_summary(data: PreparedData, engine: Engine, cfg: Config, device: torch.device) -> None:
    s = data.summary()
    log.info(
        "data %s: %d images, %d classes, %d×%d×%d; split train %d / val %d / test %d; imbalance %.2f",
        s["source"],
        s["num_images"],
        len(s["classes"]),
        s["input_size"],
        s["input_size"],
        s["channels"],
        s["split_sizes"]["train"],
        s["split_sizes"]["val"],
        s["split_sizes"]["test"],
        s["imbalance_ratio"],
    )
    p = engine.parameters()
    log.info(
        "model %s: %s parameters (%s trainable, %s frozen); engine %s; device %s",
        cfg.model.name,
        f"{p['total']:,}",
        f"{p['trainable']:,}",
        f"{p['frozen']:,}",
        engine.name,
        device,
    )
