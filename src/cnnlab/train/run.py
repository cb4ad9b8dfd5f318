"""cnnlab train and lr-find: a config → a complete run folder."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml

from .. import __version__
from ..config import Config, build_config, save_config
from ..data import PreparedData, prepare_data
from ..data.loaders import TensorBatches
from ..data.transforms import build_batch_transform, build_transform
from ..errors import CnnlabError
from ..evaluate.metrics import MONITORABLE, compute_metrics
from ..evaluate.runner import evaluate_checkpoint, report
from ..models import count_parameters, get_spec
from ..models.transfer import apply_freeze
from ..runs.store import RunFolder, atomic_write_json, atomic_write_text, now
from ..runtime import load_run_data, resolve_device, split_loader
from ..train.build import (
    HeadOnlyTrainer,
    build_model,
    feature_sets,
    param_groups,
    uses_feature_cache,
)
from ..train.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    FineTune,
    HistoryCSV,
    LRSchedule,
    Progress,
    StepLog,
)
from ..train.losses import (
    MultiLabel,
    SingleLabel,
    balanced_class_weights,
    init_output_bias,
)
from ..train.optim import build_optimizer, build_schedule
from ..train.trainer import Trainer, seed_everything, uses_conv

log = logging.getLogger(__name__)


@dataclass
@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    stop_reason: str


def _task(data: PreparedData, cfg: Config) -> SingleLabel | MultiLabel:
    if data.multilabel:
        if cfg.train.class_weights == "auto":
            raise CnnlabError("train.class_weights 'auto' is for single-label data; this dataset is multi-label")
        return MultiLabel()
    if cfg.train.class_weights == "auto":
        return SingleLabel(balanced_class_weights(data.class_counts("train")))
    return SingleLabel()


def _check_monitor(monitor: str, multilabel: bool) -> None:
    """A monitored metric must exist for this kind of data: found before the run folder is made."""
    kind = MONITORABLE.get(monitor.removeprefix("val_"), "any")
    if kind != "any" and (kind == "multi-label") != multilabel:
        raise CnnlabError(f"train.monitor {monitor!r} is defined for {kind} data; this dataset is "
                          f"{'multi' if multilabel else 'single'}-label")


def _metric_value(task: Any, logits: torch.Tensor, y: torch.Tensor, classes: list[str], name: str) -> float:
    value = compute_metrics(y.numpy(), task.probs(logits).numpy(), classes).get(name)
    if value is None:
        raise CnnlabError(f"train.monitor 'val_{name}' is not defined for this task (e.g. multi-label vs single-label)")
    return float(value)


def _train_loader(data: PreparedData, cfg: Config, device: torch.device, channels_last: bool = False
                  ) -> TensorBatches:
    """Training batches: seeded order, the augmentation preset per image, batch-level augmentation."""
    d = cfg.data
    train_idx = data.splits["train"]

    def sample() -> torch.Tensor:  # gathered only for presets that need pixel statistics
        return data.images[torch.as_tensor(train_idx[:: max(1, len(train_idx) // 2000)][:2000])]

    transform = build_transform(d.augment, data.input_size, data.channels, d.augment_options, images=sample)
    batch_tf = build_batch_transform(d.random_erasing, d.mixup, d.cutmix, len(data.classes), device,
                                     multilabel=data.multilabel)
    return split_loader(data, "train", cfg.train.batch_size, device, shuffle=True, seed=cfg.train.seed,
                   transform=transform, sampler=d.sampler, batch_transform=batch_tf, channels_last=channels_last)


def _feature_loaders(model: torch.nn.Module, data: PreparedData, cfg: Config, device: torch.device
                     ) -> tuple[TensorBatches, Optional[TensorBatches], dict[str, Any]]:
    """Backbone features of train and val computed once; batches of those features."""
    bs, cl = cfg.train.batch_size, uses_conv(model)
    feats, pos, seconds = feature_sets(model, lambda s: split_loader(data, s, bs, device, channels_last=cl),
                                       data.splits)
    labels = torch.cat([data.labels[torch.as_tensor(data.splits[s])] for s in ("train", "val")])
    train = TensorBatches(feats, labels, pos["train"], bs, [], [], shuffle=True, seed=cfg.train.seed,
                          device=device, normalize="features", sampler=cfg.data.sampler)
    val = TensorBatches(feats, labels, pos["val"], bs, [], [], device=device, normalize="features") \
        if len(pos["val"]) else None
    info = {"used": True, "seconds": round(seconds, 2), "dim": int(feats.shape[1]), "images": int(len(feats))}
    log.info("feature cache: %d backbone features of size %d computed once in %.1fs", len(feats), feats.shape[1],
             seconds)
    return train, val, info


def train(cfg: Config, *, resume: Optional[str | Path] = None, epochs: Optional[int] = None,
          overwrite: bool = False, callbacks: Sequence[Callback] = (), progress: bool = True) -> TrainResult:
    """Train a model and write a complete run folder.

    Args:
        cfg: the resolved config (ignored when resuming: the run's own config is used).
        resume: a run folder to continue from its last checkpoint.
        epochs: with ``resume``, a new total number of epochs (to extend a run).
        overwrite: replace an existing run folder at ``cfg.run.out``.
        callbacks: extra callbacks, called before checkpointing at each event.
        progress: show progress bars.

    Returns:
        The run folder, the per-epoch history, test metrics and why training stopped.

    Raises:
        CnnlabError: bad input, found before training starts wherever possible.
        KeyboardInterrupt: after marking the run 'interrupted' (resume it later).
    """
    state = None
    if resume is not None:
        run = RunFolder(resume).require()
        if not run.last_ckpt.is_file():
            raise CnnlabError(f"run folder {str(run.path)!r} has no checkpoints/last.pt to resume from")
        saved = yaml.safe_load(run.config.read_text())
        cfg = build_config(saved, {"train.epochs": epochs} if epochs else None, source=str(run.config))
        state = run.load_checkpoint("last")
        if epochs and cfg.train.schedule == "onecycle":
            raise CnnlabError("a one-cycle schedule is planned for its epochs and cannot be extended; "
                              "start a new run or use another schedule")
        if state["epoch"] >= cfg.train.epochs and run.metrics_json.exists():
            raise CnnlabError(f"run {str(run.path)!r} already finished {state['epoch']} epochs; "
                              "pass --epochs N with a larger N to extend it")
    else:
        out = cfg.run.out or f"runs/{cfg.model.name}-{Path(cfg.data.source).name}-{datetime.now():%Y%m%d-%H%M%S}"
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": out})})
        run = RunFolder(out)

    device = resolve_device(cfg.train.device)
    if state is not None:
        data = load_run_data(run, cfg, progress)
    else:
        data = prepare_data(cfg.data, cfg.model.name, cfg.train.seed, progress=progress)
    _check_monitor(cfg.train.monitor, data.multilabel)
    seed_everything(cfg.train.seed)
    model = build_model(cfg, len(data.classes), data.channels, data.input_size)

    summary = data.summary()
    if state is None:  # only now, with data and model checked, does the run folder appear
        run.create(overwrite=overwrite)
        save_config(cfg, run.config)
        atomic_write_json(run.dataset_json, summary)
        atomic_write_json(run.split_json, {"fingerprint": data.fingerprint(),
                                           "indices": {k: v.tolist() for k, v in data.splits.items()}})
    _log_summary(summary, data.skipped, model, cfg, device)
    run.update_status(status="running", started=now(), cnnlab=__version__, torch=torch.__version__,
                      python=platform.python_version(), device=str(device), parameters=count_parameters(model),
                      **({"resumed_from_epoch": state["epoch"]} if state else {}))

    meta = {"config": cfg.model_dump(mode="json"), "classes": data.classes, "multilabel": data.multilabel,
            "preprocess": {"input_size": data.input_size, "channels": data.channels, "mean": data.mean,
                           "std": data.std, "normalize": data.normalize,
                           "interpolation": get_spec(cfg.model.name).interpolation}}
    if cfg.train.init_output_bias and state is None:
        init_output_bias(model, data.class_counts("train"),
                         num_images=len(data.splits["train"]) if data.multilabel else None)
    model.to(device)
    optimizer = build_optimizer(cfg.optim.name, param_groups(model, cfg), lr=cfg.optim.lr,
                                weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum)
    has_val = len(data.splits["val"]) > 0
    if uses_feature_cache(cfg):
        train_batches, val_batches, cache_info = _feature_loaders(model, data, cfg, device)
        run.update_status(feature_cache=cache_info)
        trainer_cls: type[Trainer] = HeadOnlyTrainer
    else:
        channels_last = uses_conv(model)
        train_batches = _train_loader(data, cfg, device, channels_last)
        val_batches = split_loader(data, "val", cfg.train.batch_size, device, channels_last=channels_last) \
            if has_val else None
        trainer_cls = Trainer

    cbs: list[Callback] = [Progress(enabled=progress), HistoryCSV(run.history_csv),
                           StepLog(run.path / "steps.csv", cfg.train.log_every)]
    if cfg.model.fine_tune:
        cbs.append(FineTune(cfg.model.fine_tune[0],
                            lambda frozen: apply_freeze(model, "backbone" if frozen else "none")))
    scheduler, interval = build_schedule(optimizer, cfg.train, cfg.train.epochs, len(train_batches))
    if scheduler is not None:
        cbs.append(LRSchedule(scheduler, interval, cfg.train.monitor))
    if cfg.train.patience:
        cbs.append(EarlyStopping(cfg.train.monitor, cfg.train.patience, cfg.train.min_delta))
    cbs += list(callbacks)
    cbs.append(Checkpoint(run.path / "checkpoints", cfg.train.monitor if has_val else "train_loss", lambda: meta))
    trainer = trainer_cls(model, optimizer, device, cbs, task=_task(data, cfg))
    metric = cfg.train.monitor.removeprefix("val_")
    if cfg.train.monitor.startswith("val_") and metric not in ("loss", "acc"):
        trainer.val_metrics = lambda logits, y: {metric: _metric_value(trainer.task, logits, y, data.classes, metric)}
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming %s after epoch %d of %d", run.path, trainer.epoch, cfg.train.epochs)
        if epochs:
            save_config(cfg, run.config)

    run.metrics_json.unlink(missing_ok=True)  # its presence means "finished": not while training
    try:
        trainer.fit(train_batches, val_batches, cfg.train.epochs)
    except KeyboardInterrupt:
        run.update_status(status="interrupted", stopped=now(), epochs_done=trainer.epoch)
        log.warning("interrupted after epoch %d; continue with: cnnlab train --resume %s", trainer.epoch, run.path)
        raise
    except BaseException as e:
        run.update_status(status="failed", stopped=now(), epochs_done=trainer.epoch, error=repr(e)[:500])
        raise

    metrics = evaluate_checkpoint(run, data, device, cfg.train.batch_size, save=True)
    atomic_write_json(run.metrics_json, metrics)
    run.update_status(status="completed", finished=now(), epochs_done=trainer.epoch,
                      stop_reason=trainer.stop_reason or "completed all epochs",
                      train_seconds=round(sum(h["seconds"] for h in trainer.history), 1),
                      best_epoch=metrics["best_epoch"])
    if cfg.run.report:
        try:
            path = report(run.path, data=data, device=str(device))
            log.info("report: %s", path)
        except Exception as e:  # the trained run stands; the report can be made again
            log.warning("the report could not be written (%s: %s); retry with: cnnlab report %s",
                        type(e).__name__, e, run.path)
    return TrainResult(run.path, trainer.history, metrics, trainer.stop_reason)


def _log_summary(s: dict[str, Any], skipped: list[dict[str, str]], model: torch.nn.Module, cfg: Config,
                 device: torch.device) -> None:
    log.info("data %s: %d images, %d classes, %d×%d×%d; split train %d / val %d / test %d; imbalance %.2f",
             s["source"], s["num_images"], len(s["classes"]), s["input_size"], s["input_size"], s["channels"],
             s["split_sizes"]["train"], s["split_sizes"]["val"], s["split_sizes"]["test"], s["imbalance_ratio"])
    if skipped:
        log.warning("skipped %d unreadable files: %s", len(skipped),
                    "; ".join(f"{x['path']} ({x['reason']})" for x in skipped))
    p = count_parameters(model)
    log.info("model %s: %s parameters (%s trainable, %s frozen); device %s", cfg.model.name,
             f"{p['total']:,}", f"{p['trainable']:,}", f"{p['frozen']:,}", device)


def lr_find(cfg: Config, out: str | Path, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            progress: bool = True) -> dict[str, Any]:
    """LR range test for the configured data and model; writes lr_find.csv and lr_find.png into ``out``.

    Returns:
        ``lrs``, ``losses``, ``suggestion`` and the written ``files``.
    """
    from ..evaluate.plots import plot_lr_find
    from ..train.lr_find import range_test

    device = resolve_device(cfg.train.device)
    data = prepare_data(cfg.data, cfg.model.name, cfg.train.seed, progress=progress)
    seed_everything(cfg.train.seed)
    model = build_model(cfg, len(data.classes), data.channels, data.input_size).to(device)
    optimizer = build_optimizer(cfg.optim.name, param_groups(model, cfg), lr=cfg.optim.lr,
                                weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum)
    trainer = Trainer(model, optimizer, device, task=_task(data, cfg))
    result = range_test(trainer, _train_loader(data, cfg, device, uses_conv(model)), start_lr, end_lr, steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "lr_find.csv", "lr,loss\n" + "".join(
        f"{lr:.6g},{loss:.6g}\n" for lr, loss in zip(result["lrs"], result["losses"])))
    plot_lr_find(result["lrs"], result["losses"], result["suggestion"], out / "lr_find.png")
    result["files"] = [str(out / "lr_find.csv"), str(out / "lr_find.png")]
    return result
