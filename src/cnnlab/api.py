"""The public functions behind every CLI command: train, evaluate, predict, and listings."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import yaml

from . import __version__
from .config import Config, build_config, save_config
from .data import DATASETS, PreparedData, prepare_data
from .data.images import decode_file, describe_error
from .data.loaders import TensorBatches
from .errors import CnnlabError
from .data.transforms import build_batch_transform, build_transform
from .evaluate.metrics import compute_metrics, multilabel_metrics, tune_thresholds
from .models import MODELS, count_parameters, get_spec
from .models.transfer import apply_freeze
from .runs.report import save_predictions, write_report
from .runs.store import RunFolder, atomic_write_json, atomic_write_text, now
from .train.build import HeadOnlyTrainer, build_model, feature_sets, param_groups, uses_feature_cache
from .train.callbacks import (
    Callback, Checkpoint, EarlyStopping, FineTune, HistoryCSV, LRSchedule, Progress, StepLog)
from .train.optim import build_optimizer, build_schedule
from .train.losses import MultiLabel, SingleLabel, balanced_class_weights, init_output_bias
from .train.trainer import Trainer, predict_logits, seed_everything, uses_conv

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    stop_reason: str


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when present, else mps, else cpu; an unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnlabError(f"train.device {name!r}: no CUDA device is available here; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CnnlabError("train.device 'mps': no Apple GPU is available here; use --device cpu or auto")
    return torch.device(name)


def _loader(data: PreparedData, split: str, batch_size: int, device: torch.device, **kwargs: Any) -> TensorBatches:
    return TensorBatches(data.images, data.labels, data.splits[split], batch_size, data.mean, data.std,
                         device=device, normalize=data.normalize, **kwargs)


def _task(data: PreparedData, cfg: Config) -> SingleLabel | MultiLabel:
    if data.multilabel:
        if cfg.train.class_weights == "auto":
            raise CnnlabError("train.class_weights 'auto' is for single-label data; this dataset is multi-label")
        return MultiLabel()
    if cfg.train.class_weights == "auto":
        return SingleLabel(balanced_class_weights(data.class_counts("train")))
    return SingleLabel()


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
    sample = data.images[torch.as_tensor(train_idx[:: max(1, len(train_idx) // 2000)][:2000])]
    transform = build_transform(d.augment, data.input_size, data.channels, d.augment_options, images=sample)
    batch_tf = build_batch_transform(d.random_erasing, d.mixup, d.cutmix, len(data.classes), device,
                                     multilabel=data.multilabel)
    return _loader(data, "train", cfg.train.batch_size, device, shuffle=True, seed=cfg.train.seed,
                   transform=transform, sampler=d.sampler, batch_transform=batch_tf, channels_last=channels_last)


def _feature_loaders(model: torch.nn.Module, data: PreparedData, cfg: Config, device: torch.device
                     ) -> tuple[TensorBatches, Optional[TensorBatches], dict[str, Any]]:
    """Backbone features of train and val computed once; batches of those features."""
    bs, cl = cfg.train.batch_size, uses_conv(model)
    feats, pos, seconds = feature_sets(model, lambda s: _loader(data, s, bs, device, channels_last=cl), data.splits)
    labels = torch.cat([data.labels[torch.as_tensor(data.splits[s])] for s in ("train", "val")])
    train = TensorBatches(feats, labels, pos["train"], bs, [], [], shuffle=True, seed=cfg.train.seed,
                          device=device, normalize="features", sampler=cfg.data.sampler)
    val = TensorBatches(feats, labels, pos["val"], bs, [], [], device=device, normalize="features") \
        if len(pos["val"]) else None
    info = {"used": True, "seconds": round(seconds, 2), "dim": int(feats.shape[1]), "images": int(len(feats))}
    log.info("feature cache: %d backbone features of size %d computed once in %.1fs", len(feats), feats.shape[1],
             seconds)
    return train, val, info


def _load_run_data(run: RunFolder, cfg: Config, progress: bool) -> PreparedData:
    """The run's own data with its exact saved split; refuses data that changed since."""
    saved = run.read_json(run.split_json)
    return prepare_data(cfg.data, cfg.model.name, cfg.train.seed, splits=saved["indices"],
                        expect_fingerprint=saved["fingerprint"], progress=progress)


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
        if state["epoch"] >= cfg.train.epochs and run.metrics_json.exists():
            raise CnnlabError(f"run {str(run.path)!r} already finished {state['epoch']} epochs; "
                              "pass --epochs N with a larger N to extend it")
    else:
        out = cfg.run.out or f"runs/{cfg.model.name}-{Path(cfg.data.source).name}-{datetime.now():%Y%m%d-%H%M%S}"
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": out})})
        run = RunFolder(out)

    device = resolve_device(cfg.train.device)
    if state is not None:
        data = _load_run_data(run, cfg, progress)
    else:
        data = prepare_data(cfg.data, cfg.model.name, cfg.train.seed, progress=progress)
    seed_everything(cfg.train.seed)
    model = build_model(cfg, len(data.classes), data.channels, data.input_size)

    if state is None:  # only now, with data and model checked, does the run folder appear
        run.create(overwrite=overwrite)
        save_config(cfg, run.config)
        atomic_write_json(run.dataset_json, data.summary())
        atomic_write_json(run.split_json, {"fingerprint": data.fingerprint(),
                                           "indices": {k: v.tolist() for k, v in data.splits.items()}})
    _log_summary(data, model, cfg, device)
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
        val_batches = _loader(data, "val", cfg.train.batch_size, device, channels_last=channels_last) \
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
        if epochs and cfg.train.schedule == "onecycle":
            raise CnnlabError("a one-cycle schedule is planned for its epochs and cannot be extended; "
                              "start a new run or use another schedule")
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

    metrics = _evaluate_checkpoint(run, data, device, cfg.train.batch_size, save=True)
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


def report(run_path: str | Path, data: Optional[PreparedData] = None, device: str = "auto",
           progress: bool = True) -> Path:
    """Write ``report.html`` for a finished run: curves, metrics, per-class figures, errors,
    Grad-CAM, data, model, timing and config in one self-contained file."""
    from .evaluate.explain import grad_cam, last_conv, overlay

    run = RunFolder(run_path).require()
    if not run.metrics_json.is_file():
        raise CnnlabError(f"run {str(run.path)!r} has no metrics.json: it has not finished "
                          f"(continue it with: cnnlab train --resume {run.path})")
    cfg = build_config(yaml.safe_load(run.config.read_text()), source=str(run.config))
    dev = resolve_device(device)
    if data is None:
        data = _load_run_data(run, cfg, progress)
    if not (run.path / "predictions.npz").is_file():  # runs made before predictions were saved
        _evaluate_checkpoint(run, data, dev, cfg.train.batch_size, save=True)
    ckpt = run.load_checkpoint("best")
    model = _load_model(ckpt, dev)

    def normalise(idx: list[int]) -> torch.Tensor:
        batches = _ckpt_loader(ckpt, model, data.images, data.labels, np.asarray(idx), len(idx), dev)
        batches.reuse_buffers = False
        return next(iter(batches))[0]

    def cams(idx: list[int]) -> Optional[list[np.ndarray]]:
        try:
            last_conv(model)
        except CnnlabError:
            return None
        heat = grad_cam(model, normalise(idx), [None] * len(idx))
        return [overlay(data.images[i].numpy(), h) for i, h in zip(idx, heat)]

    return write_report(run, data.images, data.labels, model, normalise, cams)


def _log_summary(data: PreparedData, model: torch.nn.Module, cfg: Config, device: torch.device) -> None:
    s = data.summary()
    log.info("data %s: %d images, %d classes, %d×%d×%d; split train %d / val %d / test %d; imbalance %.2f",
             s["source"], s["num_images"], len(s["classes"]), s["input_size"], s["input_size"], s["channels"],
             s["split_sizes"]["train"], s["split_sizes"]["val"], s["split_sizes"]["test"], s["imbalance_ratio"])
    if data.skipped:
        log.warning("skipped %d unreadable files: %s", len(data.skipped),
                    "; ".join(f"{x['path']} ({x['reason']})" for x in data.skipped))
    p = count_parameters(model)
    log.info("model %s: %s parameters (%s trainable, %s frozen); device %s", cfg.model.name,
             f"{p['total']:,}", f"{p['trainable']:,}", f"{p['frozen']:,}", device)


def _warn_if_incomplete(run: RunFolder) -> None:
    status = run.status().get("status")
    if status != "completed":
        log.warning("run %s is %s, not completed: using its best checkpoint so far (epoch %s); "
                    "finish it with: cnnlab train --resume %s", run.path, status,
                    run.load_checkpoint("best").get("epoch"), run.path)


def _load_model(ckpt: dict[str, Any], device: torch.device) -> torch.nn.Module:
    cfg = build_config(ckpt["config"])
    pre = ckpt["preprocess"]
    model = build_model(cfg, len(ckpt["classes"]), pre["channels"], pre["input_size"], for_inference=True)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def _probs(model: torch.nn.Module, batches: TensorBatches, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    logits, y = predict_logits(model, batches)
    probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)
    return probs.numpy(), y.numpy()


def _ckpt_loader(ckpt: dict[str, Any], model: torch.nn.Module, images: Any, labels: torch.Tensor,
                 indices: np.ndarray, batch_size: int, device: torch.device) -> TensorBatches:
    """Batches preprocessed exactly as the checkpoint's training data was."""
    pre = ckpt["preprocess"]
    return TensorBatches(images, labels, indices, batch_size, pre["mean"], pre["std"], device=device,
                         normalize=pre["normalize"], channels_last=uses_conv(model))


def _evaluate_checkpoint(run: RunFolder, data: PreparedData, device: torch.device, batch_size: int,
                         split: str = "test", save: bool = False) -> dict[str, Any]:
    ckpt = run.load_checkpoint("best")
    if not len(data.splits.get(split, [])):
        if split == "test" and len(data.splits["val"]):
            log.warning("no test split: evaluating on the validation split")
            split = "val"
        else:
            raise CnnlabError(f"the {split!r} split of {data.source!r} is empty")
    model = _load_model(ckpt, device)

    def probs_of(part: str) -> tuple[np.ndarray, np.ndarray]:
        batches = _ckpt_loader(ckpt, model, data.images, data.labels, data.splits[part], batch_size, device)
        return _probs(model, batches, data.multilabel)

    probs, y = probs_of(split)
    metrics = compute_metrics(y, probs, data.classes)
    if data.multilabel and split != "val" and len(data.splits["val"]):
        val_probs, val_y = probs_of("val")
        thresholds = tune_thresholds(val_y, val_probs)
        tuned = multilabel_metrics(y, probs, data.classes, thresholds)
        metrics["tuned_thresholds"] = {k: tuned[k] for k in ("threshold", "accuracy", "subset_of_truth_accuracy",
                                                             "hamming_loss", "micro_f1", "macro_f1")}
    if save:
        save_predictions(run, probs, y, data.splits[split])
    return {"split": split, "checkpoint": "best", "best_epoch": ckpt["epoch"], **metrics}


def evaluate(run_path: str | Path, data: Optional[str] = None, data_dir: Optional[str] = None,
             split: str = "test", batch_size: int = 256, device: str = "auto",
             progress: bool = True) -> dict[str, Any]:
    """Evaluate a run's best checkpoint.

    Args:
        run_path: the run folder.
        data: another dataset (name or folder) to evaluate on, all of its images, classes
            matched by name; default: the run's own ``split``, exactly as saved.
        data_dir: where ``data``'s files are, for built-ins.
        split: train, val or test of the run's own data.
        batch_size: evaluation batch size.
        device: auto, cpu, cuda...
        progress: show decoding progress.

    Returns:
        The metrics dict (as in metrics.json).
    """
    run = RunFolder(run_path).require()
    _warn_if_incomplete(run)
    cfg = build_config(yaml.safe_load(run.config.read_text()), source=str(run.config))
    dev = resolve_device(device)
    if data is None:
        if split not in ("train", "val", "test"):
            raise CnnlabError(f"--split {split!r}: choose train, val or test")
        prepared = _load_run_data(run, cfg, progress)
        return _evaluate_checkpoint(run, prepared, dev, batch_size, split)
    ckpt = run.load_checkpoint("best")
    model = _load_model(ckpt, dev)
    return _evaluate_other(run, ckpt, model, data, batch_size, dev, progress, data_dir)[0]


def _evaluate_other(run: RunFolder, ckpt: dict[str, Any], model: torch.nn.Module, data: str, batch_size: int,
                    dev: torch.device, progress: bool, data_dir: Optional[str] = None
                    ) -> tuple[dict[str, Any], Any, torch.Tensor]:
    """Metrics on all images of another dataset, its classes mapped onto the model's by name."""
    cfg = build_config(yaml.safe_load(run.config.read_text()), source=str(run.config))
    pre = ckpt["preprocess"]
    dcfg = build_config({"data": {**cfg.data.model_dump(), "source": data, "data_dir": data_dir,
                                  "input_size": pre["input_size"], "channels": pre["channels"],
                                  "train_per_class": None},
                         "model": cfg.model.model_dump()}).data
    other = prepare_data(dcfg, cfg.model.name, cfg.train.seed, progress=progress)
    missing = [c for c in other.classes if c not in ckpt["classes"]]
    if missing:
        raise CnnlabError(f"dataset {data!r} has classes the model never saw: {', '.join(missing)}")
    if other.multilabel != bool(ckpt.get("multilabel")):
        raise CnnlabError(f"dataset {data!r} is {'multi' if other.multilabel else 'single'}-label; the model is not")
    cols = [ckpt["classes"].index(c) for c in other.classes]
    if other.multilabel:
        labels = torch.zeros(len(other.labels), len(ckpt["classes"]), dtype=other.labels.dtype)
        labels[:, cols] = other.labels
    else:
        labels = torch.tensor(cols)[other.labels]
    batches = _ckpt_loader(ckpt, model, other.images, labels, np.arange(len(labels)), batch_size, dev)
    probs, y = _probs(model, batches, other.multilabel)
    metrics = {"split": "all", "data": data, "checkpoint": "best", "best_epoch": ckpt["epoch"],
               **compute_metrics(y, probs, ckpt["classes"])}
    return metrics, other.images, labels


def predict(run_path: str | Path, images: Sequence[str | Path], top_k: int = 3,
            device: str = "auto") -> list[dict[str, Any]]:
    """Top-k classes and probabilities for image files, with the run's preprocessing.

    Returns:
        One dict per image: ``{"path", "top": [{"class", "prob"}...]}`` or ``{"path", "error"}``.
    """
    run = RunFolder(run_path).require()
    _warn_if_incomplete(run)
    ckpt = run.load_checkpoint("best")
    pre = ckpt["preprocess"]
    dev = resolve_device(device)
    model = _load_model(ckpt, dev)
    k = max(1, min(top_k, len(ckpt["classes"])))
    results: list[dict[str, Any]] = []
    arrays, ok = [], []
    for p in images:
        if not Path(p).is_file():
            results.append({"path": str(p), "error": "no such file"})
            continue
        try:
            arr, _ = decode_file(p, pre["channels"], pre["input_size"], ckpt["config"]["data"]["max_pixels"],
                                 pre["interpolation"])
        except Exception as e:  # one unreadable image does not stop the others
            results.append({"path": str(p), "error": describe_error(e)})
            continue
        results.append({"path": str(p)})
        arrays.append(arr)
        ok.append(len(results) - 1)
    if arrays:
        imgs = torch.from_numpy(np.stack(arrays))
        labels = torch.zeros(len(arrays), dtype=torch.long)
        batches = _ckpt_loader(ckpt, model, imgs, labels, np.arange(len(arrays)), 256, dev)
        probs, _ = _probs(model, batches, bool(ckpt.get("multilabel")))
        for row, i in zip(probs, ok):
            top = np.argsort(-row, kind="stable")[:k]
            results[i]["top"] = [{"class": ckpt["classes"][j], "prob": float(row[j])} for j in top]
    return results


def list_models(num_classes: int = 10, in_chans: int = 3) -> list[dict[str, Any]]:
    """Registered models: name, parameters (at the default input size, ``in_chans`` channels and
    ``num_classes`` classes), default input size, pretrained source and description."""
    rows = []
    for name in MODELS.names():
        spec = MODELS.get(name)
        opts = {"pretrained": False} if "pretrained" in spec.options() else {}
        model = spec.builder(num_classes=num_classes, in_chans=in_chans, input_size=spec.default_input_size, **opts)
        rows.append({"name": name, "parameters": count_parameters(model)["total"],
                     "input_size": spec.default_input_size, "pretrained": spec.pretrained or "-",
                     "description": spec.description})
    return rows


def lr_find(cfg: Config, out: str | Path, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            progress: bool = True) -> dict[str, Any]:
    """LR range test for the configured data and model; writes lr_find.csv and lr_find.png into ``out``.

    Returns:
        ``lrs``, ``losses``, ``suggestion`` and the written ``files``.
    """
    from .evaluate.plots import plot_lr_find
    from .train.lr_find import range_test

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


def explain(run_path: str | Path, images: Sequence[str | Path], target_class: Optional[str] = None,
            out: Optional[str | Path] = None, device: str = "auto") -> list[dict[str, Any]]:
    """Grad-CAM for the predicted (and a chosen) class, the first layer's filters and the
    feature maps of each conv stage, as PNGs in ``out`` (default RUN/explain).

    Returns:
        Per image: path, predicted class and probability, the Grad-CAM heat map of the
        predicted class (H×W, 0..1) and the files written.
    """
    from .evaluate.explain import feature_maps, first_layer_filters, grad_cam, last_conv, overlay
    from .evaluate.plots import plot_feature_maps, plot_image_grid

    run = RunFolder(run_path).require()
    ckpt = run.load_checkpoint("best")
    pre, classes = ckpt["preprocess"], ckpt["classes"]
    if ckpt.get("multilabel"):
        log.info("multi-label model: Grad-CAM shows the highest-scoring label")
    chosen = None
    if target_class is not None:
        if target_class not in classes:
            raise CnnlabError(f"--class {target_class!r} is not one of the model's classes: {', '.join(classes)}")
        chosen = classes.index(target_class)
    dev = resolve_device(device)
    model = _load_model(ckpt, dev)
    last_conv(model)  # a clear error for dense nets before any work
    out = Path(out) if out else run.path / "explain"
    out.mkdir(parents=True, exist_ok=True)
    filters = first_layer_filters(model)
    filters_png = plot_image_grid(filters, [str(i) for i in range(len(filters))], out / "filters.png", cols=8,
                                  title="first-layer filters")
    results = []
    for p in images:
        try:
            arr, _ = decode_file(p, pre["channels"], pre["input_size"], ckpt["config"]["data"]["max_pixels"],
                                 pre["interpolation"])
        except Exception as e:  # one unreadable image does not stop the others
            results.append({"path": str(p), "error": describe_error(e)})
            continue
        batches = _ckpt_loader(ckpt, model, torch.from_numpy(arr[None].copy()), torch.zeros(1, dtype=torch.long),
                               np.arange(1), 1, dev)
        batches.reuse_buffers = False
        x = next(iter(batches))[0]
        with torch.no_grad():
            logits = model(x)
        probs = (torch.sigmoid(logits) if ckpt.get("multilabel") else torch.softmax(logits, 1))[0].cpu().numpy()
        pred = int(probs.argmax())
        targets = [None] + ([chosen] if chosen is not None else [])
        heats = grad_cam(model, x.repeat(len(targets), 1, 1, 1), targets)
        panels = [arr] + [overlay(arr, h) for h in heats]
        titles = ["input", f"Grad-CAM: {classes[pred]} ({probs[pred]:.2f})"] + (
            [f"Grad-CAM: {classes[chosen]} ({probs[chosen]:.2f})"] if chosen is not None else [])
        stem = Path(p).stem
        cam_png = plot_image_grid(panels, titles, out / f"{stem}_gradcam.png", cols=len(panels))
        maps_png = plot_feature_maps(feature_maps(model, x), out / f"{stem}_features.png")
        results.append({"path": str(p), "predicted": classes[pred], "prob": float(probs[pred]), "heat": heats[0],
                        "files": [str(cam_png), str(maps_png), str(filters_png)]})
    return results


def compare(run_paths: Sequence[str | Path], out: str | Path = "compare.html") -> Path:
    """One page comparing finished runs: accuracy, macro-F1, parameters, time, curves overlaid."""
    from .runs.report import write_comparison

    runs = []
    for p in run_paths:
        r = RunFolder(p).require()
        if not r.metrics_json.is_file():
            raise CnnlabError(f"run {str(r.path)!r} has not finished (no metrics.json)")
        runs.append(r)
    if not runs:
        raise CnnlabError("compare needs at least one run folder")
    return write_comparison(runs, Path(out))


def evaluate_datasets(run_path: str | Path, datasets: Sequence[str], retrieval: bool = False,
                      batch_size: int = 256, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Metrics of a run on several datasets (classes matched by name), and optionally the
    within- and cross-dataset retrieval mAP matrix of penultimate-layer features.

    Returns:
        ``rows`` (one per dataset: data, images, accuracy, macro_f1, ...), and with
        ``retrieval`` a ``map`` matrix: ``map[i][j]`` = queries from dataset i, gallery j.
    """
    from .evaluate.retrieval import retrieval_map
    from .models.transfer import without_output_layer

    rows, feats = [], []
    run = RunFolder(run_path).require()
    ckpt = run.load_checkpoint("best")
    dev = resolve_device(device)
    model = _load_model(ckpt, dev)
    for name in datasets:
        m, images, labels = _evaluate_other(run, ckpt, model, name, batch_size, dev, progress)
        rows.append({"data": name, "images": m["num_samples"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                     "weighted_f1": m["weighted_f1"], "balanced_accuracy": m.get("balanced_accuracy")})
        if retrieval:
            batches = _ckpt_loader(ckpt, model, images, labels, np.arange(len(labels)), batch_size, dev)
            with without_output_layer(model):
                f, y = predict_logits(model, batches)
            feats.append((f.numpy(), y.numpy()))
    result: dict[str, Any] = {"run": str(run.path), "rows": rows}
    if retrieval:
        result["map"] = [[retrieval_map(fq, yq, fg, yg, same_set=(i == j)) for j, (fg, yg) in enumerate(feats)]
                         for i, (fq, yq) in enumerate(feats)]
    return result


def list_augmentations() -> list[dict[str, Any]]:
    """Augmentation presets and their options with defaults."""
    from .data.transforms import PRESETS, preset_options

    return [{"name": n, "options": preset_options(n)} for n in PRESETS.names()]


def list_datasets() -> list[dict[str, Any]]:
    """Built-in datasets: name, description, image size, classes."""
    return [{"name": d.name, "description": d.description, "size": d.native_size,
             "channels": d.native_channels, "classes": d.num_classes}
            for d in (DATASETS.get(n) for n in DATASETS.names())]
