"""A finished study's numbers: per-candidate results with intervals, paired differences against the
best, over-fitting flags, the winner's remaining confusions and the commands to use it."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.core.atomic import atomic_write_bytes
from cnnlab.core.study import StudySummary, cheaper_tie
from cnnlab.evaluate.bootstrap import DRAWS, accuracy_f1_intervals, mean_interval
from cnnlab.evaluate.stats import agreement, holm, map_interval, paired_accuracy, paired_map_test, seeded_paired_test
from cnnlab.inference.predictor import Predictor
from cnnlab.reports.run import read_csv, top_confused
from cnnlab.runs.data import load_run_data
from cnnlab.runs.store import RunFolder
from cnnlab.train.threads import free_core_threads
from cnnlab.workflows.cv import CvResult, paired_comparison, read_cv
from cnnlab.workflows.cv.audit import audit_labels, out_of_fold
from cnnlab.workflows.cv.folds import cv_group
from cnnlab.workflows.seeds import correct_matrix, seed_runs, spread
from cnnlab.workflows.study.curves import crossings, fit
from cnnlab.workflows.study.next import commands

if TYPE_CHECKING:
    from cnnlab.core.study import Candidate, StudyState
    from cnnlab.workflows.study.state import Study

OVERFIT_GAP = 0.05  # train accuracy above validation accuracy at the best epoch
LOSS_RISE = 0.15  # validation loss at the end above its minimum


def collect(study: Study, ranked: list[Candidate]) -> StudySummary:

    s = study.state
    cv_mode = s.folds > 1
    seeds = s.settings.seeds
    rows = []
    preds: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    corrects: dict[str, np.ndarray] = {}  # with seeds: seeds × test images, right or not
    cvs: dict[str, CvResult] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # multi-label: indices, labels, probs
    for c in ranked:
        folder = study.folder(c)
        if cv_mode:
            cv = read_cv(folder)
            if cv is None:
                continue
            cvs[c.name] = cv
            runs = [RunFolder(folder / name) for r in cv.state.runs for name in r.run_names]
        elif seeds > 1:
            runs = seed_runs(folder, study.seeds)
        else:
            runs = [RunFolder(folder)]
        first = runs[0]
        info = first.read_json(first.run_json)
        metrics = [r.read_json(r.metrics_json) for r in runs]
        history = _history(first)

        best = best_row(first)
        row: dict[str, Any] = {
            "name": c.name,
            "model": c.model,
            "mode": c.mode,
            "ran_as": c.ran_as(best.get("epoch")),  # a fine-tune whose best epoch was before its unfreeze: frozen
            "input_size": first.read_config().data.input_size or c.input_size or s.input_size,  # as trained
            "epochs": c.epochs,
            "full_epochs": c.full_epochs,
            "epochs_done": info.get("epochs_done"),
            "stop_reason": info.get("stop_reason"),
            "parameters": (info.get("parameters") or {}).get("total"),
            "train_seconds": float(np.mean([r.read_json(r.run_json).get("train_seconds") or 0 for r in runs])),
            # the whole run: data, feature extraction, training, evaluation (a frozen net's cost is its features)
            "run_seconds": float(np.mean([r.read_json(r.run_json).get("total_seconds") or 0 for r in runs])),
            "ms_per_image": latency_ms(first, s.settings.device),
            "history": history,
            "val_acc": _mean_val_acc(runs) if seeds > 1 else best.get("val_acc"),
            "train_acc": best.get("train_acc"),
            "per_class_f1": {
                k: float(np.mean([m["per_class"][k]["f1"] for m in metrics]))
                for k in s.classes
                if all(k in m.get("per_class", {}) for m in metrics)
            },
            "overfit": overfit_note(best, history),
            "run": str(folder.relative_to(study.out)),
            "search": c.search,  # default and tuned validation figures of its search (None: --no-tune)
        }
        if not cv_mode and metrics[0].get("leakage"):  # the leak guard's finding, the figure without the copies
            row["leakage"] = metrics[0]["leakage"]
        if all("confusion_matrix" in m for m in metrics):  # single-label runs
            row["confusion_matrix"] = np.sum([np.asarray(m["confusion_matrix"]) for m in metrics], axis=0).tolist()
        if s.multilabel:
            p = np.load(first.path / "predictions.npz")
            scores[c.name] = (p["indices"], p["labels"].astype(bool), p["probs"])
            _multilabel_figures(row, metrics[0], scores[c.name], s.settings.seed)
            row["selection"] = {"metric": "validation mAP", "value": best.get("val_mean_average_precision"),
                                "ci95": None}  # fmt: skip
        elif cv_mode:
            assert cv is not None  # cross-validated candidates have their cv.json
            oof, oof_f1 = cv.summary["accuracy"], cv.summary["macro_f1"]
            row["selection"] = {"metric": "out-of-fold accuracy", "value": oof.mean, "ci95": list(oof.ci95)}
            row["accuracy"] = {"value": oof.mean, "ci95": list(oof.ci95), "of": "out-of-fold"}
            row["macro_f1"] = {"value": oof_f1.mean, "ci95": list(oof_f1.ci95), "of": "out-of-fold"}
            if seeds > 1:
                row["accuracy"]["sd"] = cv.seed_sd.get("accuracy")
        elif seeds > 1:
            shared = correct_matrix(runs)
            if shared is None:
                continue
            corrects[c.name] = shared[1]
            acc = seeded_paired_test(np.zeros_like(shared[1][:1]), shared[1])  # B − nothing: the accuracy itself
            f1 = spread([m["macro_f1"] for m in metrics])
            row["accuracy"] = {"value": acc["difference"], "ci95": acc["ci95"], "sd": acc["seed_sd_b"], "of": "test"}
            row["macro_f1"] = {"value": f1["mean"], "ci95": None, "sd": f1["sd"], "of": "test"}
            row["selection"] = {"metric": f"validation accuracy (mean of {seeds} seeds)", "value": row["val_acc"],
                                "ci95": None}  # fmt: skip
        else:
            p = np.load(first.path / "predictions.npz")
            preds[c.name] = (p["indices"], p["labels"], p["probs"].argmax(1))
            row["selection"] = {"metric": "validation accuracy", "value": best.get("val_acc"), "ci95": None}
        rows.append(row)
    _image_intervals(s, rows, preds, cvs)
    paired = _paired_rows(s, rows, cvs, preds, corrects) if not s.multilabel else _paired_map(s, rows, scores)
    for pair, adjusted in zip(paired, holm([pair["p"] for pair in paired])):
        pair["p_holm"] = adjusted  # one winner against every other candidate: a family of tests
    summary: dict[str, Any] = {
        "multilabel": bool(s.multilabel),
        "mode": "cv" if cv_mode else "split",
        "folds": s.folds,
        "rows": rows,
        "paired": paired,
        "winner": rows[0]["name"] if rows else None,
    }
    if rows:
        _winner(study, ranked, rows, summary)
    _image_level(study, ranked, rows, cvs, summary)
    if s.fractions:
        summary["curves"] = learning_curves(study, [c for c in ranked if c.name in {r["name"] for r in rows}])
    return StudySummary.model_validate(summary)


def _image_level(
    study: Study, ranked: list[Candidate], rows: list[dict[str, Any]], cvs: dict[str, CvResult], summary: dict[str, Any]
) -> None:
    """What the study finds image by image: the best two candidates' agreement and, when asked
    for, the label audit of the best one's cross-validation."""
    s = study.state
    cv_mode = s.folds > 1
    if len(rows) > 1 and not s.multilabel and (cv_mode or s.settings.seeds == 1):
        summary["agreement"] = _agreement(study, rows[:2], cvs)
    if cv_mode and s.settings.audit_labels and rows:
        summary["label_audit"] = _audit(
            study, next(c for c in ranked if c.name == rows[0]["name"]), cvs[rows[0]["name"]]
        )


def _predictions(study: Study, row: dict[str, Any], cv: CvResult | None) -> tuple[np.ndarray, ...]:
    """(dataset indices, labels, probabilities) of a candidate, sorted by index: its test
    predictions, or with cross-validation its out-of-fold ones."""
    folder = study.out / row["run"]
    if cv is not None:
        idx, y, p = out_of_fold(cv_group(folder), cv.state.runs)
    else:
        saved = np.load(folder / "predictions.npz")
        idx, y, p = saved["indices"], saved["labels"], saved["probs"]
    order = np.argsort(idx)
    return idx[order], y[order], p[order]


def _first_fold_run(cv: CvResult) -> str:
    """The name of a CV's first fold run (its first seed's, with --seeds)."""
    return cv.state.runs[0].run_names[0]


def _first_run(study: Study, row: dict[str, Any], cv: CvResult | None) -> RunFolder:
    folder = study.out / row["run"]
    return RunFolder(folder / _first_fold_run(cv)) if cv is not None else RunFolder(folder)


def _agreement(study: Study, pair: list[dict[str, Any]], cvs: dict[str, CvResult]) -> dict[str, Any] | None:
    """The best two candidates image by image (their test images, or out of fold): agreement, κ,
    the oracle bound and their averaged ensemble; the images only one gets right go to agreement.npz
    for the report's thumbnails."""
    (ia, ya, pa), (ib, _, pb) = (_predictions(study, r, cvs.get(r["name"])) for r in pair)
    if not np.array_equal(ia, ib):
        return None
    agree = agreement(ya, pa, pb)
    only = {k: ia[agree[k]] for k in ("only_a", "only_b")}
    agree.update(a=pair[0]["name"], b=pair[1]["name"], on="out-of-fold" if cvs else "test", images=int(len(ia)))
    agree["only_a"], agree["only_b"] = only["only_a"].tolist(), only["only_b"].tolist()
    shown = np.concatenate([only["only_a"][:30], only["only_b"][:30]]).astype(np.int64)
    run = _first_run(study, pair[0], cvs.get(pair[0]["name"]))
    data = load_run_data(run, run.read_config(), False, leaks=False)
    pixels = (
        np.stack([np.asarray(data.images[int(i)]).reshape(data.images.shape[1:]) for i in shown])
        if len(shown)
        else np.zeros((0, *data.images.shape[1:]), np.uint8)
    )
    buf = io.BytesIO()  # written whole or not at all: a study killed here leaves no half-written file
    np.savez_compressed(buf, index=shown, images=pixels, labels=data.labels.numpy()[shown])
    atomic_write_bytes(study.out / "agreement.npz", buf.getvalue())
    return agree


def _audit(study: Study, c: Candidate, cv: CvResult) -> dict[str, Any]:
    """The label audit of the best candidate's cross-validation (cnnlab.workflows.cv.audit)."""
    folder = study.folder(c)
    run = RunFolder(folder / _first_fold_run(cv))
    data = load_run_data(run, run.read_config(), False, leaks=False)
    result = audit_labels(folder, cv.state.runs, cv_group(folder), data)
    return {**result, "candidate": c.name, "folder": str(folder.relative_to(study.out))}


def learning_curves(study: Study, cands: list[Candidate]) -> dict[str, Any]:
    """Each candidate's validation figure by training-set size (its whole-split run and its runs on
    the smaller shares), the fitted power laws, and where they cross."""
    s = study.state
    fits: dict[str, dict[str, Any]] = {}
    for c in cands:
        points = [(s.sizes["train"], best_row(RunFolder(study.folder(c))).get(study.monitor))]
        for f in s.fractions:
            run = RunFolder(study.fraction_folder(c, f))
            if f < 1 and run.metrics_json.is_file():
                n = len(run.read_json(run.split_json)["indices"]["train"])
                points.append((n, best_row(run).get(study.monitor)))
        fitted = fit(points)
        if fitted:
            fits[c.name] = fitted
    return {"metric": study.monitor, "fits": fits, "crossings": crossings(fits)}


def _winner(study: Study, ranked: list[Candidate], rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The winner's remaining confusions, its test figures and the commands to use it."""
    s = study.state
    cv_mode = s.folds > 1
    w = rows[0]
    if "confusion_matrix" in w:
        summary["confusions"] = top_confused(w["confusion_matrix"], s.classes, n=6)
    if cv_mode and (study.out / "winner" / "metrics.json").is_file():
        wm = RunFolder(study.out / "winner").read_json(RunFolder(study.out / "winner").metrics_json)
        summary["winner_test"] = {
            "accuracy": wm["accuracy"],
            "macro_f1": wm["macro_f1"],
            "images": wm["num_samples"],
            "run": "winner",
        }
    elif not cv_mode or s.small_data:  # small data: its out-of-fold figures over every image
        summary["winner_test"] = {
            "accuracy": w["accuracy"]["value"],
            "macro_f1": w["macro_f1"]["value"],
            "images": sum(s.split_sizes.values()) if s.small_data else s.sizes["test"],
            "run": w["run"],
        }
        if "map" in w:
            summary["winner_test"]["mean_average_precision"] = w["map"]["value"]
    summary["cheaper_tie"] = chosen = cheaper_tie(rows, summary["paired"]) if s.folds == 1 or s.small_data else None
    name = chosen["candidate"] if chosen else w["name"]  # the next commands retrain it
    summary["commands"] = commands(study, next(c for c in ranked if c.name == name))


def _paired_rows(
    s: StudyState,
    rows: list[dict[str, Any]],
    cvs: dict[str, CvResult],
    preds: dict[str, Any],
    corrects: dict[str, np.ndarray],
) -> list[dict[str, Any]]:
    """The best candidate against each other one, by the test that fits the plan: the corrected
    resampled t over folds (CV), the seeded paired test over test images (one split, N seeds), or
    McNemar's exact test (one split, one seed)."""
    cv_mode, seeds = s.folds > 1, s.settings.seeds
    paired: list[dict[str, Any]] = []
    if len(rows) < 2:
        return paired
    top = rows[0]["name"]
    for r in rows[1:]:
        if s.small_data:
            t = _paired_test(preds[top], preds[r["name"]], s.settings.seed)
            paired.append({"best": top, "other": r["name"], **t, "on": t["on"].replace("test", "out-of-fold")})
        elif cv_mode:
            pc = paired_comparison(cvs[r["name"]], cvs[top], "accuracy")
            ct = pc.corrected_t
            paired.append(
                {
                    "best": top,
                    "other": r["name"],
                    "on": f"{s.folds} folds (out-of-fold accuracy)",
                    "difference": pc.mean_difference,
                    "ci95": pc.ci95,
                    "p": ct["p"] if ct else pc.wilcoxon_p,
                    "test": "Nadeau-Bengio corrected resampled t over folds"
                    if ct
                    else "Wilcoxon signed-rank over folds",
                    "seed_sd": [pc.seed_sd_b, pc.seed_sd_a] if seeds > 1 else None,
                }
            )
        elif seeds > 1:
            t = seeded_paired_test(corrects[r["name"]], corrects[top])  # best − other
            paired.append(
                {
                    "best": top,
                    "other": r["name"],
                    "on": f"{t['images']} test images × {seeds} seeds",
                    "difference": t["difference"],
                    "ci95": t["ci95"],
                    "p": t["p"],
                    "test": t["test"],
                    "seed_sd": [t["seed_sd_b"], t["seed_sd_a"]],
                }
            )
        else:
            paired.append(
                {"best": top, "other": r["name"], **_paired_test(preds[top], preds[r["name"]], s.settings.seed)}
            )
    return paired


def _multilabel_figures(
    row: dict[str, Any], m: dict[str, Any], scores: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int
) -> None:
    """A multi-label candidate's test figures: mAP and subset accuracy (every label right, at 0.5)
    with 95 % bootstrap intervals over the test images, seed 003's accuracy (the predicted labels
    are all true) and the figures at the per-class thresholds tuned on validation."""
    _, y, probs = scores
    exact = ((probs >= 0.5) == y).all(1).astype(float)
    row["map"] = {"value": m["mean_average_precision"], "ci95": map_interval(y, probs, seed, DRAWS), "of": "test"}
    row["accuracy"] = {"value": float(exact.mean()), "ci95": mean_interval(exact, seed, DRAWS), "of": "test",
                       "metric": "subset accuracy"}  # fmt: skip
    row["macro_f1"] = {"value": m["macro_f1"], "ci95": None, "of": "test"}
    row["subset_of_truth_accuracy"] = m.get("subset_of_truth_accuracy")
    row["tuned_thresholds"] = m.get("tuned_thresholds")


def _paired_map(
    s: StudyState, rows: list[dict[str, Any]], scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> list[dict[str, Any]]:
    """The best multi-label candidate against each other one: mAP difference on the shared test
    images (paired bootstrap interval, paired permutation test)."""
    out: list[dict[str, Any]] = []
    if len(rows) < 2:
        return out
    top = rows[0]["name"]
    ib, y, pb = scores[top]
    for r in rows[1:]:
        io, _, po = scores[r["name"]]
        common, xb, xo = np.intersect1d(ib, io, return_indices=True)
        t = paired_map_test(y[xb], pb[xb], po[xo], seed=s.settings.seed)
        out.append({"best": top, "other": r["name"], "on": f"{len(common)} test images (mAP)", **t})
    return out


def _mean_val_acc(runs: list[RunFolder]) -> float | None:
    """The seeds' mean validation accuracy at their best epochs: what a seeded study ranks by."""
    values = [v for v in (best_row(r).get("val_acc") for r in runs) if v is not None]
    return float(np.mean(values)) if values and len(values) == len(runs) else None


def _history(run: RunFolder) -> list[dict[str, float]]:

    return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in read_csv(run.path / "history.csv")]


def overfit_note(best: dict[str, float], history: list[dict[str, float]]) -> str:
    """A sentence when training ran away from validation; empty when it did not."""
    notes = []
    if best.get("train_acc") is not None and best.get("val_acc") is not None:
        gap = best["train_acc"] - best["val_acc"]
        if gap > OVERFIT_GAP:
            notes.append(
                f"train accuracy {best['train_acc']:.3f} vs validation {best['val_acc']:.3f} at the best "
                f"epoch (gap {gap:.3f})"
            )
    losses = [h["val_loss"] for h in history if "val_loss" in h]
    if len(losses) > 1:
        low = int(np.argmin(losses))
        if low < len(losses) - 1 and losses[-1] > losses[low] * (1 + LOSS_RISE):
            notes.append(f"validation loss rose {100 * (losses[-1] / losses[low] - 1):.0f} % after epoch {low + 1}")
    return "; ".join(notes)


def latency_ms(run: RunFolder, device: str, repeats: int = 15) -> float | None:
    """Median milliseconds to predict one image (batch 1, decoded, on the study's device)."""
    try:
        p = Predictor.from_run(run, "cpu" if device == "auto" else device, warn=False)
    except Exception:  # a run without a checkpoint has no latency to show
        return None
    pre = p.preprocess
    x = np.random.default_rng(0).integers(0, 256, (1, pre.channels, pre.input_size, pre.input_size), dtype=np.uint8)
    times = []
    with free_core_threads():  # the threads training and the probe had: a busy core is not fought over
        for i in range(3 + repeats):  # three to warm up, then the timed ones
            t = time.perf_counter()
            p.probs_of_arrays(x)
            times += [time.perf_counter() - t] if i >= 3 else []
    return round(float(np.median(times)) * 1e3, 3)


def _image_intervals(
    s: StudyState, rows: list[dict[str, Any]], preds: dict[str, Any], cvs: dict[str, CvResult]
) -> None:
    """Image-level intervals of one split's single-label candidates over their test images; with small
    data over every image, out-of-fold (whose predictions also go to ``preds`` for the paired tests)."""
    if s.small_data:
        for name, cv in cvs.items():
            idx, y, p = out_of_fold(cv_group(cv.out), cv.state.runs)
            preds[name] = (idx, y, p.argmax(1))
    if (s.folds == 1 or s.small_data) and s.settings.seeds == 1 and rows and not s.multilabel:
        _test_intervals(rows, preds, len(s.classes), s.settings.seed, "out-of-fold" if s.small_data else "test")


def _test_intervals(rows: list[dict[str, Any]], preds: dict[str, Any], k: int, seed: int, of: str = "test") -> None:
    """Accuracy and macro-F1 with 95 % percentile bootstrap intervals over the test (or out-of-fold) images."""
    for r in rows:
        _, y, p = preds[r["name"]]
        for key, figure in accuracy_f1_intervals(y, p, k, seed, DRAWS).items():
            r[key] = {**figure, "of": of}


def _paired_test(best: tuple[np.ndarray, ...], other: tuple[np.ndarray, ...], seed: int) -> dict[str, Any]:
    """Accuracy difference best − other on the test images both scored: bootstrap interval and
    McNemar's exact test on the images only one of them gets right."""
    ib, yb, pb = best
    io, _, po = other
    common, xb, xo = np.intersect1d(ib, io, return_indices=True)
    t = paired_accuracy(pb[xb] == yb[xb], po[xo] == yb[xb], seed, DRAWS)
    mc = t["mcnemar"]
    return {
        "on": f"{len(common)} test images",
        "difference": t["difference"],
        "ci95": t["ci95"],
        "p": t["p"],
        "test": f"McNemar exact (best only right {mc['only_a_right']}, other only right {mc['only_b_right']})",
    }


def best_row(run: RunFolder) -> dict[str, float]:
    """The history row of the run's best epoch (numbers)."""
    rows = read_csv(run.path / "history.csv")
    best = run.read_json(run.metrics_json).get("best_epoch") if run.metrics_json.is_file() else None
    row = next((r for r in rows if r["epoch"] == str(best)), rows[-1] if rows else {})
    return {k: float(v) for k, v in row.items() if v not in ("", None)}
