"""Evaluate, predict, explain, report and compare: everything that reads a finished run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import yaml

from ..config import build_config
from ..data import PreparedData, prepare_data
from ..errors import CnnlabError
from ..evaluate.metrics import compute_metrics, multilabel_metrics, tune_thresholds
from ..runs.report import save_predictions, write_report
from ..runs.store import RunFolder
from ..runtime import (
    checkpoint_loader,
    decode_each,
    load_model,
    load_run_data,
    predict_probs,
    resolve_device,
    warn_if_incomplete,
)
from ..train.losses import task_for
from ..train.trainer import predict_logits

log = logging.getLogger(__name__)


def report(run_path: str | Path, data: Optional[PreparedData] = None, device: str = "auto",
           progress: bool = True) -> Path:
    """Write ``report.html`` for a finished run: curves, metrics, per-class figures, errors,
    Grad-CAM, data, model, timing and config in one self-contained file."""
    from ..evaluate.explain import grad_cam, last_conv, overlay

    run = RunFolder(run_path).require()
    if not run.metrics_json.is_file():
        raise CnnlabError(f"run {str(run.path)!r} has no metrics.json: it has not finished "
                          f"(continue it with: cnnlab train --resume {run.path})")
    cfg = build_config(yaml.safe_load(run.config.read_text()), source=str(run.config))
    dev = resolve_device(device)
    if data is None:
        data = load_run_data(run, cfg, progress)
    if not (run.path / "predictions.npz").is_file():  # runs made before predictions were saved
        evaluate_checkpoint(run, data, dev, cfg.train.batch_size, save=True)
    ckpt = run.load_checkpoint("best")
    model = load_model(ckpt, dev)

    def cams(idx: list[int]) -> Optional[list[np.ndarray]]:
        try:
            last_conv(model)
        except CnnlabError:
            return None
        batches = checkpoint_loader(ckpt, model, data.images, data.labels, np.asarray(idx), len(idx), dev)
        batches.reuse_buffers = False
        heat = grad_cam(model, next(iter(batches))[0], [None] * len(idx))
        return [overlay(data.images[i].numpy(), h) for i, h in zip(idx, heat)]

    return write_report(run, data.images, data.labels, cams)


def evaluate_checkpoint(run: RunFolder, data: PreparedData, device: torch.device, batch_size: int,
                        split: str = "test", save: bool = False) -> dict[str, Any]:
    """Metrics of the best checkpoint on ``split`` (test, falling back to val); multi-label runs
    also get the figures at per-class thresholds tuned on validation. ``save`` keeps the
    predictions in predictions.npz for the report."""
    ckpt = run.load_checkpoint("best")
    if not len(data.splits.get(split, [])):
        if split == "test" and len(data.splits["val"]):
            log.warning("no test split: evaluating on the validation split")
            split = "val"
        else:
            raise CnnlabError(f"the {split!r} split of {data.source!r} is empty")
    model = load_model(ckpt, device)

    def probs_of(part: str) -> tuple[np.ndarray, np.ndarray]:
        batches = checkpoint_loader(ckpt, model, data.images, data.labels, data.splits[part], batch_size, device)
        return predict_probs(model, batches, data.multilabel)

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
    warn_if_incomplete(run)
    cfg = build_config(yaml.safe_load(run.config.read_text()), source=str(run.config))
    dev = resolve_device(device)
    if data is None:
        if split not in ("train", "val", "test"):
            raise CnnlabError(f"--split {split!r}: choose train, val or test")
        prepared = load_run_data(run, cfg, progress)
        return evaluate_checkpoint(run, prepared, dev, batch_size, split)
    ckpt = run.load_checkpoint("best")
    model = load_model(ckpt, dev)
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
    batches = checkpoint_loader(ckpt, model, other.images, labels, np.arange(len(labels)), batch_size, dev)
    probs, y = predict_probs(model, batches, other.multilabel)
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
    warn_if_incomplete(run)
    ckpt = run.load_checkpoint("best")
    dev = resolve_device(device)
    model = load_model(ckpt, dev)
    k = max(1, min(top_k, len(ckpt["classes"])))
    results: list[dict[str, Any]] = []
    arrays, ok = [], []
    for p, arr, error in decode_each(ckpt, images):
        if arr is None:
            results.append({"path": p, "error": error})
            continue
        results.append({"path": p})
        arrays.append(arr)
        ok.append(len(results) - 1)
    if arrays:
        imgs = torch.from_numpy(np.stack(arrays))
        labels = torch.zeros(len(arrays), dtype=torch.long)
        batches = checkpoint_loader(ckpt, model, imgs, labels, np.arange(len(arrays)), 256, dev)
        probs, _ = predict_probs(model, batches, bool(ckpt.get("multilabel")))
        for row, i in zip(probs, ok):
            top = np.argsort(-row, kind="stable")[:k]
            results[i]["top"] = [{"class": ckpt["classes"][j], "prob": float(row[j])} for j in top]
    return results


def explain(run_path: str | Path, images: Sequence[str | Path], target_class: Optional[str] = None,
            out: Optional[str | Path] = None, device: str = "auto") -> list[dict[str, Any]]:
    """Grad-CAM for the predicted (and a chosen) class, the first layer's filters and the
    feature maps of each conv stage, as PNGs in ``out`` (default RUN/explain).

    Returns:
        Per image: path, predicted class and probability, the Grad-CAM heat map of the
        predicted class (H×W, 0..1) and the files written.
    """
    from ..evaluate.explain import (
        feature_maps,
        first_layer_filters,
        grad_cam,
        last_conv,
        overlay,
    )
    from ..evaluate.plots import plot_feature_maps, plot_image_grid

    run = RunFolder(run_path).require()
    ckpt = run.load_checkpoint("best")
    classes = ckpt["classes"]
    if ckpt.get("multilabel"):
        log.info("multi-label model: Grad-CAM shows the highest-scoring label")
    chosen = None
    if target_class is not None:
        if target_class not in classes:
            raise CnnlabError(f"--class {target_class!r} is not one of the model's classes: {', '.join(classes)}")
        chosen = classes.index(target_class)
    dev = resolve_device(device)
    model = load_model(ckpt, dev)
    last_conv(model)  # a clear error for dense nets before any work
    out = Path(out) if out else run.path / "explain"
    out.mkdir(parents=True, exist_ok=True)
    filters = first_layer_filters(model)
    filters_png = plot_image_grid(filters, [str(i) for i in range(len(filters))], out / "filters.png", cols=8,
                                  title="first-layer filters")
    results = []
    for p, arr, error in decode_each(ckpt, images):
        if arr is None:
            results.append({"path": p, "error": error})
            continue
        batches = checkpoint_loader(ckpt, model, torch.from_numpy(arr[None].copy()),
                                    torch.zeros(1, dtype=torch.long), np.arange(1), 1, dev)
        batches.reuse_buffers = False
        x = next(iter(batches))[0]
        with torch.no_grad():
            logits = model(x)
        probs = task_for(bool(ckpt.get("multilabel"))).probs(logits)[0].cpu().numpy()
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
    from ..runs.report import write_comparison

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
    from ..evaluate.retrieval import retrieval_map
    from ..models.transfer import without_output_layer

    rows, feats = [], []
    run = RunFolder(run_path).require()
    ckpt = run.load_checkpoint("best")
    dev = resolve_device(device)
    model = load_model(ckpt, dev)
    for name in datasets:
        m, images, labels = _evaluate_other(run, ckpt, model, name, batch_size, dev, progress)
        rows.append({"data": name, "images": m["num_samples"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                     "weighted_f1": m["weighted_f1"], "balanced_accuracy": m.get("balanced_accuracy")})
        if retrieval:
            batches = checkpoint_loader(ckpt, model, images, labels, np.arange(len(labels)), batch_size, dev)
            with without_output_layer(model):
                f, y = predict_logits(model, batches)
            feats.append((f.numpy(), y.numpy()))
    result: dict[str, Any] = {"run": str(run.path), "rows": rows}
    if retrieval:
        result["map"] = [[retrieval_map(fq, yq, fg, yg, same_set=(i == j)) for j, (fg, yg) in enumerate(feats)]
                         for i, (fq, yq) in enumerate(feats)]
    return result
