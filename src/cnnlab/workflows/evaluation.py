"""Evaluate, predict, explain, report and compare: everything that reads a finished run."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.core.errors import CnnlabError
from cnnlab.core.metrics import headline
from cnnlab.core.results import (
    Baseline,
    Baselines,
    DatasetRow,
    DatasetTable,
    Evaluation,
    EvaluationResult,
    Explanation,
    Prediction,
)
from cnnlab.core.run_settings import EvaluateSettings, ExplainSettings, PredictSettings
from cnnlab.data.pipeline import PreparedData
from cnnlab.evaluate.metrics import (
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    multilabel_metrics,
    tune_thresholds,
)
from cnnlab.evaluate.plots import plot_feature_maps, plot_image_grid
from cnnlab.evaluate.retrieval import retrieval_scores
from cnnlab.inference.explain import explain_image, feature_maps, first_layer_filters, grad_cam, last_conv, overlay
from cnnlab.inference.predictor import Predictor
from cnnlab.models.ops import predict_logits, probabilities, resolve_device
from cnnlab.models.transfer import without_output_layer
from cnnlab.reports.kit import Section
from cnnlab.reports.run import (
    write_comparison,
    write_report,  # matplotlib and jinja2 only when a report is written
)
from cnnlab.runs.data import load_run_data
from cnnlab.runs.ledger import record_test_scoring
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.scoring import evaluate_keep_head, other_data, split_indices

log = logging.getLogger(__name__)


def report(run_path: str | Path, device: str = "auto", progress: bool = True) -> Path:
    """Write ``report.html`` for a finished run: curves, metrics, per-class figures, errors,
    Grad-CAM, data, model, timing and config in one self-contained file. The run's lock is taken, so
    a report is never written while another process trains the run (training itself writes its
    report with :func:`write_run_report`, holding the lock)."""
    run = RunFolder(run_path).require()
    state = run.state()
    if state.status != "completed":
        raise CnnlabError(
            f"run {str(run.path)!r} is {state.describe()}: it has not finished"
            + (f" (next: {state.next_step})" if state.next_step else "")
        )
    run.lock("write its report")
    try:
        return write_run_report(run, None, device, progress)
    finally:
        run.unlock()


def write_run_report(
    run: RunFolder, data: PreparedData | None, device: str, progress: bool, predictor: Predictor | None = None
) -> Path:
    """report.html for ``run``, whose lock the caller holds (``data``, ``predictor``: already loaded)."""

    cfg = run.read_config()
    dev = resolve_device(device)
    if data is None:
        data = load_run_data(run, cfg, progress)
    predictor = predictor or Predictor.from_run(run, dev, warn=False)
    if not run.predictions_npz.is_file():  # runs made before predictions were saved
        evaluate_checkpoint(run, data, dev, cfg.train.batch_size, save=True, predictor=predictor)
    model = predictor.model

    def cams(idx: list[int]) -> list[np.ndarray] | None:
        try:
            last_conv(model)
        except CnnlabError:
            return None
        batches = predictor.batches(data.images, data.labels, np.asarray(idx), len(idx))
        batches.reuse_buffers = False
        heat = grad_cam(model, next(iter(batches))[0], [None] * len(idx))
        return [overlay(data.images[i].numpy(), h) for i, h in zip(idx, heat)]

    log.info("writing the report: figures, Grad-CAM, tables")
    return write_report(run, data.images, data.labels, cams)


def evaluate_checkpoint(
    run: RunFolder,
    data: PreparedData,
    device: torch.device,
    batch_size: int,
    split: str = "test",
    save: bool = False,
    predictor: Predictor | None = None,
    progress: bool = False,
    val_logits: tuple[torch.Tensor, torch.Tensor] | None = None,
    calibrate: bool = False,
    tta: str = "none",
) -> dict[str, Any]:
    """Metrics of the best checkpoint on ``split`` (test, falling back to val); multi-label runs
    also get the figures at per-class thresholds tuned on validation. ``save`` keeps the
    predictions in predictions.npz for the report. ``val_logits``: the validation split's
    logits and labels as the training loop scored them with the best checkpoint's weights (its
    last validation), used instead of a second pass when their labels are the split's.
    ``calibrate``: fit a temperature on the validation split first (``--calibrate temperature``);
    the figures are then of the calibrated probabilities, with ECE before and after. ``tta``
    (flips, flips+crops): the same figures with test-time augmentation beside the plain ones."""
    predictor = predictor or Predictor.from_run(run, device, warn=False)
    if not len(data.splits.get(split, [])):
        if split == "test" and len(data.splits["val"]):
            log.info("no test split (held out or empty): the best checkpoint is scored on the validation split")
            split = "val"
        else:
            raise CnnlabError(f"the {split!r} split of {data.source!r} is empty")

    def logits_of(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            part == "val"
            and val_logits is not None
            and np.array_equal(val_logits[1].numpy(), data.labels[data.splits[part]].numpy())
        ):
            log.info("the best checkpoint (epoch %s) on the val split: as scored by its validation", predictor.epoch)
            return val_logits
        log.info(
            "evaluating the best checkpoint (epoch %s, %s) on the %s split: %d images",
            predictor.epoch,
            predictor.weights,
            part,
            len(data.splits[part]),
        )
        return predictor.logits(
            data.images, data.labels, data.splits[part], batch_size, progress, f"evaluating on {part}"
        )

    calibration: dict[str, Any] | None = None
    val: tuple[torch.Tensor, torch.Tensor] | None = None
    if calibrate:
        if data.multilabel:
            raise CnnlabError("--calibrate temperature is for single-label runs (softmax outputs)")
        if not len(data.splits["val"]):
            raise CnnlabError("--calibrate temperature fits on the validation split, and this run has none")
        val = logits_of("val")
        predictor.temperature = fit_temperature(val[0].numpy(), val[1].numpy())
        calibration = {"method": "temperature", "temperature": round(predictor.temperature, 5), "fitted_on": "val"}
        log.info("temperature scaling: T = %.3f, fitted on the validation split", predictor.temperature)
    z, labels = val if split == "val" and val is not None else logits_of(split)
    probs, y = predictor.probabilities(z).numpy(), labels.numpy()
    if split == "test":
        record_test_scoring(run, "train" if save else "evaluate")
    metrics = compute_metrics(y, probs, data.classes)
    if calibration is not None:  # ECE of the same predictions at T = 1, beside the calibrated figure
        plain = probabilities(z, multilabel=False).numpy()
        calibration.update(ece_before=expected_calibration_error(y, plain), ece_after=metrics["ece"])
        metrics["calibration"] = calibration
    if tta != "none":
        plain_tta, predictor.tta = predictor.tta, tta
        try:
            zt, _ = predictor.logits(data.images, data.labels, data.splits[split], batch_size, progress, f"TTA ({tta})")
        finally:
            predictor.tta = plain_tta
        with_tta = compute_metrics(y, predictor.probabilities(zt).numpy(), data.classes)
        metrics["tta"] = {"views": tta, **{k: with_tta[k] for k in headline() if with_tta.get(k) is not None}}
    if data.multilabel and split != "val" and len(data.splits["val"]):
        vz, vy = logits_of("val")
        thresholds = tune_thresholds(vy.numpy(), predictor.probabilities(vz).numpy())
        tuned = multilabel_metrics(y, probs, data.classes, thresholds)
        metrics["tuned_thresholds"] = {
            k: tuned[k]
            for k in ("threshold", "accuracy", "subset_of_truth_accuracy", "hamming_loss", "micro_f1", "macro_f1")
        }
    if data.leaks is not None:
        metrics["leakage"] = _without_copies(data, split, y, probs)
    if save:
        run.save_predictions(probs, y, data.splits[split])
    return {
        "split": split,
        "checkpoint": "best",
        "best_epoch": predictor.epoch,
        "weights": predictor.weights,
        **metrics,
    }


def _without_copies(data: PreparedData, split: str, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """What the leakage guard found and did, and the split's figures without the images that copy
    training images (the de-duplicated figure beside the raw one)."""
    leaks = data.leaks or {}
    pairs = leaks.get("pairs", [])
    out: dict[str, Any] = {
        "action": leaks.get("action"),
        "rule": leaks.get("rule"),
        "copies": dict(Counter(e["split"] for e in pairs)),
        "dropped": leaks.get("dropped", 0),
    }
    copies = {e["index"] for e in pairs if e["split"] == split}
    if copies and not out["dropped"]:
        keep = np.asarray([int(i) not in copies for i in data.splits[split]])
        if keep.any():
            clean = compute_metrics(y[keep], probs[keep], data.classes)
            out["without_copies"] = {"images": int(keep.sum()), "left_out": int((~keep).sum())}
            out["without_copies"].update({k: clean[k] for k in headline() if clean.get(k) is not None})
    return out


def evaluate(run_path: str | Path, settings: EvaluateSettings | None = None, progress: bool = True) -> EvaluationResult:
    """Evaluate a run's best checkpoint: on its own split, on another dataset, or (several datasets,
    or ``retrieval``) on each of several with :func:`evaluate_datasets`; with ``keep_head`` the
    pretrained net it started from, with its own classes (:func:`evaluate_keep_head`). ``settings``
    (:class:`EvaluateSettings`) say which data, split and extras; ``progress``: show decoding progress.

    Returns:
        The evaluation (metrics.json's figures), the keep-head baselines, or the table of datasets.
    """
    st = settings or EvaluateSettings()
    many = list(st.data or [])
    if st.keep_head:
        found = evaluate_keep_head(run_path, st.label_map, many or None, st.split, st.batch_size, st.device, progress,
                                   st.max_pixels)  # fmt: skip
        return Baselines(baselines=[Baseline(**b) for b in found])
    if len(many) > 1 or st.retrieval:
        return evaluate_datasets(run_path, st, progress)
    run = RunFolder(run_path).require()
    predictor = Predictor.from_run(run, st.device)
    if not many:
        prepared = load_run_data(run, run.read_config(), progress)
        return Evaluation.of(evaluate_checkpoint(run, prepared, predictor.device, st.batch_size, st.split or "test",
                                                 predictor=predictor, tta=st.tta, progress=progress))  # fmt: skip
    doc = _evaluate_other(run, predictor, many[0], st.batch_size, progress, st.data_dir, st.max_pixels, st.split)[0]
    return Evaluation.of(doc)


def _evaluate_other(
    run: RunFolder,
    predictor: Predictor,
    data: str,
    batch_size: int,
    progress: bool,
    data_dir: str | None = None,
    max_pixels: int | None = None,
    split: str | None = None,
) -> tuple[dict[str, Any], Any, torch.Tensor, np.ndarray]:
    """Metrics on another dataset (all its images, or ``split`` of it under the run's split
    settings), its classes mapped onto the model's by name; averages run over the classes present
    in that data (absent ones are listed). Also returns its images, labels and the indices scored."""

    ckpt = predictor.ckpt
    other, labels = other_data(run, ckpt, data, progress, data_dir, max_pixels)
    idx = split_indices(other, split)
    probs, y = predictor.probs(other.images, labels, idx, batch_size)
    present = None if other.multilabel else sorted(set(y.tolist()))
    metrics = {
        "split": split or "all",
        "data": data,
        "checkpoint": "best",
        "best_epoch": ckpt["epoch"],
        **compute_metrics(y, probs, ckpt["classes"], present=present),
    }
    return metrics, other.images, labels, idx


def predict(
    run_path: str | Path, images: Sequence[str | Path], settings: PredictSettings | None = None
) -> list[Prediction]:
    """Top-k classes and probabilities for image files, with the run's preprocessing
    (``settings``: ``top_k``, ``device``, ``max_pixels``, ``tta``).

    Returns:
        One prediction per image (multi-label runs add ``labels``, those over the thresholds tuned on
        validation), or the reason it could not be read.
    """
    st = settings or PredictSettings()
    predictor = Predictor.from_run(run_path, st.device, max_pixels=st.max_pixels, tta=st.tta)
    return [Prediction.model_validate(r) for r in predictor.predict(list(images), top_k=st.top_k)]


def explain(
    run_path: str | Path, images: Sequence[str | Path], settings: ExplainSettings | None = None
) -> list[Explanation]:
    """Grad-CAM for the predicted (and ``settings.target_class``) class, the first layer's filters
    and the feature maps of each conv stage, as PNGs in ``settings.out`` (default RUN/explain).

    Returns:
        Per image: path, predicted class and probability, the Grad-CAM heat map of the
        predicted class (H×W, 0..1) and the files written.
    """
    st = settings or ExplainSettings()
    target_class, out, device, max_pixels = st.target_class, st.out, st.device, st.max_pixels
    run = RunFolder(run_path).require()
    predictor = Predictor.from_run(run, device, max_pixels=max_pixels)
    classes = predictor.classes
    if predictor.multilabel:
        log.info("multi-label model: Grad-CAM shows the highest-scoring label")
    chosen = None
    if target_class is not None:
        if target_class not in classes:
            raise CnnlabError(f"--class {target_class!r} is not one of the model's classes: {', '.join(classes)}")
        chosen = classes.index(target_class)
    last_conv(predictor.model)  # a clear error for dense nets before any work
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        return [Explanation(**r) for r in _explain_into(Path(out), Path(out), predictor, images, chosen)]
    with run.artifacts("explain", merge=True) as scratch:  # into the run folder through its writer
        found = _explain_into(scratch, run.path / "explain", predictor, images, chosen)
    return [Explanation(**r) for r in found]


def _explain_into(
    folder: Path, final: Path, predictor: Predictor, images: Sequence[str | Path], chosen: int | None
) -> list[dict[str, Any]]:
    """Draw the explain PNGs into ``folder``; the results name them as they will be in ``final``."""

    model, classes = predictor.model, predictor.classes
    filters = first_layer_filters(model)
    plot_image_grid(
        filters, [str(i) for i in range(len(filters))], folder / "filters.png", cols=8, title="first-layer filters"
    )
    results: list[dict[str, Any]] = []
    for p, arr, error in predictor.decode_all(list(images)):
        if arr is None:
            results.append({"path": p, "error": error})
            continue
        targets = [None] + ([chosen] if chosen is not None else [])
        x, probs, heats = explain_image(predictor, arr, targets)
        pred = int(probs.argmax())
        panels = [arr] + [overlay(arr, h) for h in heats]
        titles = ["input", f"Grad-CAM: {classes[pred]} ({probs[pred]:.2f})"] + (
            [f"Grad-CAM: {classes[chosen]} ({probs[chosen]:.2f})"] if chosen is not None else []
        )
        stem = Path(p).stem
        plot_image_grid(panels, titles, folder / f"{stem}_gradcam.png", cols=len(panels))
        plot_feature_maps(feature_maps(model, x), folder / f"{stem}_features.png")
        results.append(
            {
                "path": str(p),
                "predicted": classes[pred],
                "prob": float(probs[pred]),
                "heat": heats[0],
                "files": [
                    str(final / f"{stem}_gradcam.png"),
                    str(final / f"{stem}_features.png"),
                    str(final / "filters.png"),
                ],
            }
        )
    return results


def compare(run_paths: Sequence[str | Path], out: str | Path = "compare.html", extra: Sequence[Section] = ()) -> Path:
    """One page comparing runs (unfinished ones marked): settings, the config fields that differ,
    accuracy, macro-F1, parameters, time, curves overlaid; ``extra`` sections after them."""

    runs = [RunFolder(p).require(checkpoint=False) for p in run_paths]  # unfinished runs are marked
    if not runs:
        raise CnnlabError("compare needs at least one run folder")
    return write_comparison(runs, Path(out), extra)


def evaluate_datasets(run_path: str | Path, settings: EvaluateSettings, progress: bool = True) -> DatasetTable:
    """Metrics of a run on each of ``settings.data`` (classes matched by name; all images, or each one's
    ``split``), and with ``retrieval`` the within- and cross-dataset retrieval matrices (mAP and
    precision at ``top_k``) of the penultimate features."""
    datasets, retrieval, top_k, split = list(settings.data or []), settings.retrieval, settings.top_k, settings.split
    batch_size, max_pixels = settings.batch_size, settings.max_pixels
    rows, feats = [], []
    run = RunFolder(run_path).require()
    predictor = Predictor.from_run(run, settings.device)
    for name in datasets:
        m, images, labels, idx = _evaluate_other(
            run, predictor, name, batch_size, progress, max_pixels=max_pixels, split=split
        )
        rows.append(DatasetRow(data=name, images=m["num_samples"], accuracy=m["accuracy"], macro_f1=m["macro_f1"],
                               weighted_f1=m["weighted_f1"], balanced_accuracy=m.get("balanced_accuracy")))  # fmt: skip
        if retrieval:
            with without_output_layer(predictor.model):
                f, y = predict_logits(predictor.model, predictor.batches(images, labels, idx, batch_size))
            feats.append((f.numpy(), y.numpy()))
    result = DatasetTable(run=str(run.path), split=split or "all", rows=rows)
    if retrieval:
        cells = [
            [retrieval_scores(fq, yq, fg, yg, same_set=(i == j), k=top_k) for j, (fg, yg) in enumerate(feats)]
            for i, (fq, yq) in enumerate(feats)
        ]
        result.map = [[c["map"] for c in row] for row in cells]
        result.precision_at_k = [[c["precision_at_k"] for c in row] for row in cells]
        result.queries = [row[0]["queries"] for row in cells]
        result.k = top_k
    return result
