"""The pages of a folder of runs: a seed group's seeds.html, a cross-validation's cv.html and the
label audit's label_audit.html. Each takes the group's saved summary (the same values its JSON
holds) and returns the page; the workflow that owns the folder writes it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnlab.core.state import CvState, SeedsState
from cnnlab.reports.kit import Markup, Section, page, table, thumbnails

__all__ = ["cv_page", "label_audit_page", "seeds_page"]


def seeds_page(state: SeedsState) -> str:
    """seeds.html: the spread of each metric over the seeds and every seed's figures."""
    summary = state.summary or {}
    metrics = list(summary)
    cfg = state.config
    intro = Markup(
        "<p>{} on {}, trained from {} initialisations (seeds {}) on one split (split seed {}); every seed is scored "
        "on the same {} test images. A gap between two models smaller than this spread is within what a change of "
        "seed alone does.</p>"
    ).format(cfg["model"]["name"], cfg["data"]["source"], len(state.seeds), ", ".join(map(str, state.seeds)),
             cfg["data"]["split_seed"], state.images)  # fmt: skip
    stat_rows = [[k, s.mean, s.sd, s.min, s.max] for k, s in summary.items()]
    seed_rows = [[r.seed, r.run, r.best_epoch] + [r.metrics.get(k) for k in metrics] for r in state.runs]
    sections = [
        Section("summary", "Mean ± sd over seeds", intro + table(["metric", "mean", "sd", "min", "max"], stat_rows)),
        Section("seeds", "Per seed", table(["seed", "run", "best epoch"] + metrics, seed_rows)),
    ]
    return page(f"cnnlab seeds: {cfg['model']['name']}", f"{len(state.seeds)} seeds", sections)


def cv_page(cv: CvState) -> str:
    """cv.html: each metric's mean, sd and interval over the folds, and every fold's figures."""
    summary = cv.summary or {}
    metrics = list(summary)
    fold_rows = [[r.name, r.images] + [r.metrics.get(k) for k in metrics] for r in cv.runs]
    seed_sd = cv.seed_sd
    stat_rows = [
        [k, s.mean, s.std, f"{s.ci95[0]:.4f} – {s.ci95[1]:.4f}"] + ([seed_sd.get(k)] if seed_sd else [])
        for k, s in summary.items()
    ]
    seeds = f" and {cv.seeds} initialisations per fold (a fold's figure is their mean)" if cv.seeds > 1 else ""
    intro = Markup(
        "<p>{}-fold cross-validation × {} of {} on {}, seed {}{}: each fold is scored on its own out-of-fold "
        "images; the {} test images belong to no fold.</p>"
    ).format(cv.folds, cv.repeats, cv.model, cv.data, cv.seed, seeds, cv.test_images_held_out)
    header = ["metric", "mean", "std", "95 % interval"] + (["sd over seeds"] if seed_sd else [])
    sections = [
        Section("summary", "Mean ± std and 95 % bootstrap interval", intro + table(header, stat_rows)),
        Section("folds", "Per fold", table(["fold", "images"] + metrics, fold_rows)),
    ]
    return page(f"cnnlab cv: {cv.model}", f"{cv.folds} folds × {cv.repeats}", sections)


def label_audit_page(rows: Sequence[dict[str, Any]], images: Sequence[np.ndarray], source: str, issues: int) -> str:
    """label_audit.html: thumbnails of the images whose given label the fold models believe least
    (``images``: those of the first rows, in order) and the same as a table."""
    top = rows[: len(images)]
    captions = [
        f"#{r['rank']} given {r['given']} → {r['suggested']} ({r['suggested_confidence']:.2f})"
        + (" ⚑" if r["issue"] else "")
        for r in top
    ]
    intro = Markup(
        "<p>{} images outside the test split, each scored by the fold model that did not train on it. cleanlab "
        "flags {} as likely label errors (⚑; listed in label_issues.csv). Shown: the {} whose given label the "
        "models believe least. Retrain without the flagged ones with <code>--exclude label_issues.csv</code> and "
        "compare the two CVs fold by fold (<code>cnnlab compare CV_A CV_B</code>).</p>"
    ).format(len(rows), issues, len(top))
    listing = table(
        ["rank", "image", "given", "suggested", "confidence", "P(given)", "flagged"],
        [
            [r["rank"], r["path"] or r["index"], r["given"], r["suggested"], r["suggested_confidence"],
             r["given_probability"], "yes" if r["issue"] else ""]
            for r in top
        ],
    )  # fmt: skip
    sections = [
        Section("doubted", "Images whose label the models doubt most", intro + thumbnails(images, captions)),
        Section("list", "The same, as a table", listing),
    ]
    return page("cnnlab label audit", f"{source}: {issues} likely label errors", sections)
