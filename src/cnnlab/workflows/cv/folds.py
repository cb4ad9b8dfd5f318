"""`cnnlab cv`: folds as run folders, a summary (cv.json, cv.html), and paired comparison."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.metrics import headline
from cnnlab.core.schema import Config, flatten_config
from cnnlab.core.settings import CvSettings
from cnnlab.core.state import CvFold, CvState, FoldStat
from cnnlab.data.pipeline import prepare_data
from cnnlab.data.split import grouped_split, kfold_indices, stratified_split
from cnnlab.evaluate.bootstrap import mean_interval
from cnnlab.evaluate.stats import corrected_resampled_t, fold_differences, mcnemar_exact
from cnnlab.models import get_spec
from cnnlab.reports.groups import cv_page
from cnnlab.runs.group import RunGroup, group_at
from cnnlab.runs.store import RunFolder, now
from cnnlab.workflows.cv.audit import audit_labels
from cnnlab.workflows.seeds import seed_config, seed_list
from cnnlab.workflows.training import train_or_resume

log = logging.getLogger(__name__)


def _fold_splits(cfg: Config, folds: int, repeats: int, progress: bool) -> tuple[list[dict[str, Any]], int, Any]:
    """The pool (train+val of the usual split) cut into stratified folds, per repeat; the test split
    is left out of every fold. Each fold's run trains on the other folds less an inner validation
    part (``data.val_size`` of them, stratified), which alone picks its checkpoint and stops it early;
    the held-out fold is the run's test part, scored once at the end."""

    # the folds are cut from every image, data.exclude or not: a CV without some images (a label
    # audit's) must be scored on the same folds as the one it is compared with; each fold's run
    # leaves them out of its training part
    whole = cfg.data.model_copy(update={"exclude": None})
    data = prepare_data(whole, get_spec(cfg.model.name), cfg.data.split_seed, progress=progress)
    pool = np.sort(np.concatenate([data.splits["train"], data.splits["val"]]))
    labels = data.labels.numpy()[pool]
    groups = data.groups[pool] if data.groups is not None else None
    counts = labels.sum(0) if labels.ndim == 2 else np.bincount(labels, minlength=len(data.classes))
    if folds > int(counts[counts > 0].min()):
        raise CnnlabError(
            f"--folds {folds}: the smallest class has {int(counts[counts > 0].min())} images outside "
            "the test split; use fewer folds"
        )
    plans = []
    for r in range(repeats):
        for i, (tr, held_out) in enumerate(kfold_indices(labels, folds, cfg.data.split_seed + r, groups)):
            vs = cfg.data.val_size
            frac = vs if vs < 1 else min(vs / max(len(tr), 1), 0.5)
            inner_seed = cfg.data.split_seed + r * 1000 + i
            keep, inner = (
                grouped_split(labels[tr], groups[tr], (1 - frac, frac), inner_seed)
                if groups is not None
                else stratified_split(labels[tr], (1 - frac, frac), inner_seed)
            )
            splits = {
                "train": pool[tr[keep]].tolist(),
                "val": pool[tr[inner]].tolist(),
                "test": pool[held_out].tolist(),
            }
            plans.append({"repeat": r + 1, "fold": i + 1, "name": f"r{r + 1}-fold{i + 1}", "splits": splits})
    return plans, int(len(data.splits["test"])), data


@dataclass(frozen=True)
class FoldHooks:
    """What a workflow that runs a CV inside itself adds to its folds: ``on_fold(n, run)`` after fold n
    (1-based) finished (a sweep prunes a trial whose first folds are clearly worse: it raises),
    ``callbacks`` for every fold's training, and ``same_plan=False`` for a caller that re-plans (a
    study re-plans epochs from measured speed) and continues with new settings."""

    on_fold: Callable[[int, RunFolder], None] | None = None
    callbacks: Sequence[Any] = ()
    same_plan: bool = True


@dataclass(frozen=True)
class CvResult:
    """A cross-validation folder and its typed state (cv.json): what :func:`cross_validate` returns
    and :func:`read_cv` reads."""

    out: Path
    state: CvState

    @property
    def model(self) -> str:
        return self.state.model

    @property
    def folds(self) -> int:
        return self.state.folds

    @property
    def repeats(self) -> int:
        return self.state.repeats

    @property
    def seeds(self) -> int:
        return self.state.seeds

    @property
    def test_images_held_out(self) -> int:
        return self.state.test_images_held_out

    @property
    def summary(self) -> dict[str, FoldStat]:
        """metric → mean, std and 95 % interval over the folds."""
        return self.state.summary or {}

    @property
    def seed_sd(self) -> dict[str, float]:
        """metric → the mean spread over seeds within a fold (with seeds > 1)."""
        return self.state.seed_sd

    @property
    def label_audit(self) -> dict[str, Any] | None:
        return self.state.label_audit

    @property
    def status(self) -> str:
        return self.state.status


def cross_validate(
    cfg: Config, settings: CvSettings | None = None, progress: bool = True, hooks: FoldHooks | None = None
) -> CvResult:
    """Train one run per fold (and repeat) under ``out`` and summarise them.

    Each fold trains on the other folds and is scored on its own (out-of-fold) part; the
    data's test split belongs to no fold and is never used. The folds depend only on the
    data and ``data.split_seed``, so two CVs with the same split seed (an mlp and a cnn, say) can be
    compared fold by fold (:func:`paired_comparison`). With ``resume``, finished folds are kept.
    ``hooks`` let a sweep or a study act after each fold and train each fold with its callbacks.
    With ``seeds`` > 1 each fold trains that many initialisations (``train.seed``, +1 …; runs
    ``<fold>-seed<s>``): a fold's figure is their mean, and the summary's ``seed_sd`` is the mean
    spread over seeds within a fold, to set beside the spread over folds and any gap between models.
    With ``audit``, the out-of-fold probabilities rank the images whose label the models doubt
    (:func:`cnnlab.workflows.cv.audit.audit_labels`: label_audit.csv, label_issues.csv, a page).

    ``out`` defaults to ``cv/<model>-<data>``. A resume must ask for the folds, repeats and config
    the CV started with (else a one-line error naming the saved value).

    Returns:
        The CV folder and the summary written to ``out/cv.json``.
    """
    settings, hooks = settings or CvSettings(), hooks or FoldHooks()
    folds, repeats, seeds, resume = settings.folds, settings.repeats, settings.seeds, settings.resume
    out = Path(settings.out or Path("cv") / f"{cfg.model.name}-{Path(cfg.data.source).name}")
    group = cv_group(out)
    seed_values = seed_list(cfg.train.seed, seeds)
    state = _plan_state(cfg, folds, repeats, seeds)
    if resume and group.has_state():
        saved = group.load(CvState)
        if hooks.same_plan:
            _check_same_plan(group, saved, state)
    elif not resume:
        group.check_new()
    plans, held_out, data = _fold_splits(cfg, folds, repeats, progress)
    state.test_images_held_out = held_out
    group.save(state)
    rows = []
    for n, plan in enumerate(plans, 1):
        names = [plan["name"]] if seeds == 1 else [f"{plan['name']}-seed{s}" for s in seed_values]
        per_seed = []
        for name, s in zip(names, seed_values):
            run = group.run(name)
            log.info("cv: fold %d of %d (%s)", n, len(plans), name)
            fold_cfg = seed_config(cfg, s, run.path)
            if train_or_resume(fold_cfg, callbacks=hooks.callbacks, progress=progress, splits=plan["splits"]) is None:
                log.info("cv: %s already finished", name)
            metrics = run.read_json(run.metrics_json)
            per_seed.append({k: metrics[k] for k in headline() if metrics.get(k) is not None})
        if hooks.on_fold is not None:
            hooks.on_fold(n, group.run(names[0]))
        keys = [k for k in per_seed[0] if all(k in m for m in per_seed)]
        rows.append(CvFold(
            name=plan["name"], repeat=plan["repeat"], fold=plan["fold"], images=len(plan["splits"]["test"]),
            train_images=len(plan["splits"]["train"]), runs=names,
            metrics={k: float(np.mean([m[k] for m in per_seed])) for k in keys},
            seed_metrics={k: [m[k] for m in per_seed] for k in keys} if seeds > 1 else None,
        ))  # fmt: skip
    _summarise(state, rows)
    if settings.audit_labels:
        state.label_audit = audit_labels(out, rows, group, data)
    state.status, state.finished = "completed", now()
    group.save(state)
    atomic_write_text(out / "cv.html", cv_page(state))
    return CvResult(out, state)


def cv_group(out: str | Path) -> RunGroup:
    """The cross-validation folder ``out``: one run folder per fold, its state in cv.json."""
    return group_at("cv", out)


def _plan_state(cfg: Config, folds: int, repeats: int, seeds: int = 1) -> CvState:
    """What a CV is, saved when it starts: a resume must ask for the same."""
    config = cfg.model_dump(mode="json")
    config["run"] = {k: v for k, v in config["run"].items() if k != "out"}
    return CvState(model=cfg.model.name, data=cfg.data.source, seed=cfg.train.seed, split_seed=cfg.data.split_seed,
                   folds=folds, repeats=repeats, seeds=seeds, config=config, started=now(),
                   status="running")  # fmt: skip


def _check_same_plan(group: RunGroup, saved: CvState, asked: CvState) -> None:
    """``--resume`` with other folds, repeats, data or model settings would mix two CVs in one folder."""
    for key in ("folds", "repeats", "seeds"):
        if getattr(saved, key) != getattr(asked, key):
            raise CnnlabError(
                f"{group.state_path} was started with --{key} {getattr(saved, key)}, not {getattr(asked, key)}: "
                "resume with the same, or start a new CV with another --out"
            )
    mine, theirs = flatten_config(asked.config), flatten_config(saved.config)
    for key in sorted(set(mine) | set(theirs)):
        if key.startswith("run.") or mine.get(key) == theirs.get(key):
            continue
        raise CnnlabError(
            f"{group.state_path} was started with {key} = {theirs.get(key)!r}, not "
            f"{mine.get(key)!r}: resume with the same settings, or start a new CV with another --out"
        )


def _summarise(state: CvState, rows: list[CvFold]) -> None:
    """Each headline metric over the folds (mean, sd, bootstrap interval of the mean) and, with seeds,
    the mean spread over seeds within a fold."""
    stats = {}
    for k in headline():
        vals = [r.metrics[k] for r in rows if k in r.metrics]
        if len(vals) == len(rows):
            lo, hi = mean_interval(vals, state.seed, 10_000)
            stats[k] = FoldStat(mean=float(np.mean(vals)), std=float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                                ci95=(lo, hi))  # fmt: skip
    state.seed_sd = {
        k: float(np.mean([np.std(r.seed_metrics[k], ddof=1) for r in rows if r.seed_metrics]))
        for k in stats
        if all(r.seed_metrics and k in r.seed_metrics for r in rows)
    }
    state.runs, state.summary = rows, stats


def read_cv(path: str | Path) -> CvResult | None:
    """The finished CV folder at ``path``, or None when ``path`` is not a CV folder.

    Raises:
        CnnlabError: a CV folder whose folds have not all finished, or a damaged cv.json.
    """
    group = cv_group(path)
    if not group.has_state():
        return None
    cv = group.load(CvState)
    if cv.status != "completed" or cv.summary is None:
        raise CnnlabError(
            f"the cross-validation in {str(path)!r} has not finished; finish it with "
            f"cnnlab cv --resume --out {path} (and the flags it started with)"
        )
    return CvResult(Path(path), cv)


class FoldComparison(BaseModel):
    """Two CVs on the same folds compared on one metric: the fold-by-fold differences b − a, their
    mean with a 95 % bootstrap interval and Wilcoxon's test, the corrected resampled t-test, McNemar's
    test on the pooled out-of-fold predictions (one repeat, one seed), and each CV's seed spread."""

    kind: Literal["cv"] = "cv"  # among compare's results (cnnlab.workflows.comparison.Comparison)
    metric: str
    a: str
    b: str
    folds: list[str]
    a_values: list[float]
    b_values: list[float]
    differences: list[float]
    mean_difference: float
    ci95: list[float]
    wilcoxon_p: float
    corrected_t: dict[str, Any] | None
    pooled_mcnemar: dict[str, Any] | None
    seed_sd_a: float | None
    seed_sd_b: float | None


def paired_comparison(a: CvResult, b: CvResult, metric: str = "accuracy") -> FoldComparison:
    """Fold-by-fold differences b − a of ``metric``, their mean with a 95 % bootstrap interval and a
    Wilcoxon signed-rank p-value (two-sided). The folds must be the same (same data, split seed, K, R)."""
    sa, sb = a.state, b.state
    for key, va, vb in (("data", sa.data, sb.data), ("split_seed", sa.fold_seed, sb.fold_seed),
                        ("folds", sa.folds, sb.folds), ("repeats", sa.repeats, sb.repeats)):  # fmt: skip
        if va != vb:
            raise CnnlabError(
                f"the two CVs differ in {key} ({va!r} vs {vb!r}): their folds are not the same, so they cannot be "
                "compared fold by fold"
            )
    fa = {r.name: r.metrics.get(metric) for r in sa.runs}
    fb = {r.name: r.metrics.get(metric) for r in sb.runs}
    names = [n for n in fa if n in fb and fa[n] is not None and fb[n] is not None]
    if not names:
        raise CnnlabError(f"no fold of both CVs has {metric!r}")
    diff = np.asarray([fb[n] - fa[n] for n in names])  # type: ignore[operator]  # None is filtered out above
    test = fold_differences(diff, sa.seed)
    rows = {r.name: r for r in sa.runs}
    ratio = float(np.mean([rows[n].images / max(rows[n].train_images or 1, 1) for n in names]))
    return FoldComparison(
        metric=metric, a=sa.model, b=sb.model, folds=names, a_values=[fa[n] for n in names],
        b_values=[fb[n] for n in names], differences=diff.tolist(), **test,
        corrected_t=corrected_resampled_t(diff, ratio) if rows[names[0]].train_images is not None else None,
        # with seeds a fold's figure is a mean over models: the corrected t-test over folds is the test
        pooled_mcnemar=_pooled_mcnemar(a, b) if sa.repeats == 1 and sa.seeds == sb.seeds == 1 else None,
        seed_sd_a=sa.seed_sd.get(metric), seed_sd_b=sb.seed_sd.get(metric),
    )  # fmt: skip


def _pooled_mcnemar(a: CvResult, b: CvResult) -> dict[str, Any] | None:
    """McNemar's exact test on the out-of-fold predictions of every image (one repeat: each image is
    held out once), pairing the two CVs image by image."""
    right_a, right_b = _oof_correct(a), _oof_correct(b)
    if right_a is None or right_b is None or set(right_a) != set(right_b):
        return None
    keys = sorted(right_a)
    return mcnemar_exact(np.array([right_a[k] for k in keys]), np.array([right_b[k] for k in keys]))


def _oof_correct(cv: CvResult) -> dict[int, bool] | None:
    """Image index → whether the CV's fold run that held it out classified it right."""
    out: dict[int, bool] = {}
    for r in cv.state.runs:
        run = RunFolder(cv.out / r.run_names[0])
        if not run.predictions_npz.is_file():
            return None
        p = run.load_predictions()
        if p["labels"].ndim != 1:
            return None
        out.update(zip(p["indices"].tolist(), (p["probs"].argmax(1) == p["labels"]).tolist()))
    return out
