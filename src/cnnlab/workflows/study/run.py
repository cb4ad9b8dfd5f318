"""`cnnlab study DATA`: inspect, pick candidates, probe, plan to the budget, train each (folds when
they fit), and write one report. Every candidate is an ordinary run folder (or CV folder); the
study's own state lives in study.json, so an interrupted study resumes where it stopped."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from cnnlab.core.atomic import atomic_write_json, atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import DataConfig, nest_config
from cnnlab.core.settings import CvSettings, StudySettings, SweepSettings
from cnnlab.core.study import Candidate, StudyState, StudySummary
from cnnlab.data.inspect import inspect_dataset
from cnnlab.data.pipeline import prepare_data
from cnnlab.models.factory import get_spec
from cnnlab.reports.study import write_study_report
from cnnlab.reports.study_text import format_summary
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.store import RunFolder, now
from cnnlab.train.callbacks import TimeBudget
from cnnlab.workflows.cv import FoldHooks, cross_validate, read_cv
from cnnlab.workflows.resolve import source_problem
from cnnlab.workflows.seeded import TrainPlan, train_seeds
from cnnlab.workflows.seeds import seed_group, seed_list, seed_runs
from cnnlab.workflows.study.curves import parse_fractions
from cnnlab.workflows.study.plan import (
    IMBALANCE_FOR_WEIGHTS,
    MAX_SHARE,
    default_lr,
    default_models,
    make_candidates,
    parse_models,
    search_space,
)
from cnnlab.workflows.study.planner import (
    choose_plan,
    deadline_reserve,
    expected_seconds,
    probe_share,
    record_timing,
    replan_rest,
    reserve,
)
from cnnlab.workflows.study.probes import probe_all, split_facts
from cnnlab.workflows.study.results import best_row, collect
from cnnlab.workflows.study.state import Study, StudyResult, study_group
from cnnlab.workflows.sweep.runner import run_sweep
from cnnlab.workflows.training import announce_board, train, train_or_resume

log = logging.getLogger(__name__)

STUDY_BUDGET = "the study's time budget"


def run_study(settings: StudySettings, progress: bool = True, started: float | None = None) -> StudyResult:
    """Run (or, with ``settings.resume``, finish) a study and return its result.

    The budget is wall-clock for the whole study from ``started`` (default: now): inspection,
    probes, training, evaluation and the report. With ``seeds`` > 1 every candidate (every fold) is
    trained from that many initialisations on the same split: candidates rank by their mean, and
    each gap is shown beside the spread over seeds and tested with it. With ``tune`` (the default)
    every candidate first gets the same share of the budget for a small search of its learning rate
    and weight decay on the validation split, starting from its default recipe; its final run uses
    what the search found. ``fractions`` (e.g. ``0.1,0.25,0.5,1``) also trains each candidate on
    those shares of the training split (same validation and test images) and fits a learning curve
    per candidate. With ``audit_labels`` (needs ``folds``) the best candidate's out-of-fold
    probabilities rank the images whose label its models doubt. ``group_by`` and ``on_leak`` are
    ``data.group_by`` and ``data.on_leak`` for the study's split, folds and every candidate.
    On resume every setting given must equal the saved one (see :class:`StudySettings`).
    """
    t0 = started or time.time()
    out = Path(settings.out or Path("studies") / Path(str(settings.data).rstrip("/")).name)
    shares = parse_fractions(settings.fractions)  # checked before any work
    if settings.resume:
        study = _reopen(out)
        _check_same_settings(study, settings)
    else:
        study = _start_new(settings, out, shares, progress, t0)
    announce_board(out)
    # the time spent before this session (planning of a new study is counted once, from t0)
    spent_before = study.state.spent_seconds if settings.resume else 0.0

    def spent() -> float:
        return round(spent_before + time.time() - t0, 1)

    try:
        _train_all(study, progress, t0, spent_before)
        if not any(c.status == "done" for c in study.cands):
            study.save(status="failed", spent_seconds=spent())
            why = "; ".join(f"{c.name}: {c.why}" for c in study.cands if c.why)
            raise CnnlabError(
                f"no candidate finished within the {study.state.budget_seconds:.0f} s budget ({why}); "
                "start again with a larger --budget"
            )
        summary = _finish(study, progress)
    except KeyboardInterrupt:
        study.save(status="interrupted", spent_seconds=spent())
        log.warning("study interrupted; continue with: cnnlab study --resume --out %s", out)
        raise
    study.save(status="completed", finished=now(), spent_seconds=spent(), summary=summary)
    note = _test_set_note(study)
    if note and study.state.summary is not None:
        study.state.summary.test_set_note = note
    write_study_report(study)
    study.save(spent_seconds=spent())
    return StudyResult.of(out, study.state, [*format_summary(study.state), *([f"note: {note}"] if note else [])])


def _start_new(settings: StudySettings, out: Path, shares: list[float], progress: bool, t0: float) -> Study:
    """A new study folder with its plan: the data inspected, the candidates probed, the budget planned
    (its settings hold DATA: they refuse a new study without it)."""
    _clear_unplanned(out)
    study_group(out).check_new()
    seed_list(settings.seed, settings.seeds)  # a seed range that fits, checked before any work
    try:
        study = _start(settings, out, shares, progress, t0)
        study.save()
    except BaseException:  # nothing trained yet: leave no half-made folder that --resume could not use
        if out.is_dir() and not (out / "study.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
        raise
    return study


def _test_set_note(study: Study) -> str | None:
    """The ledger's word on the study's test split (one split: each candidate scores it once, so a
    study of K candidates has used it K times; with CV, the winner's run scores it)."""
    folders = [study.out / "winner"] if (study.out / "winner" / "split.json").is_file() else []
    folders += [] if folders else [study.folder(c) for c in study.cands]  # one split: each candidate's run
    for folder in folders:
        for split_json in sorted(folder.rglob("split.json")):
            run = RunFolder(split_json.parent)
            if run.metrics_json.is_file() and run.read_json(run.split_json)["indices"].get("test"):
                return use_sentence(run.test_split_id())
    return None


def _clear_unplanned(out: Path) -> None:
    """A study killed while inspecting or probing leaves its folder with inspect.json and no
    study.json: nothing trained, nothing to resume; a new start replaces it."""
    if out.is_dir() and not (out / "study.json").exists():
        entries = {p.name for p in out.iterdir()}
        if entries and entries <= {"inspect.json", "inspect.json.tmp"} | {p.name for p in out.glob(".*.tmp")}:
            log.info("study: %s stopped before its plan was saved; starting it again", out)
            shutil.rmtree(out)


def _fraction_text(shares: list[float]) -> str:
    """``--fractions`` as compared on ``--resume`` (0.1,0.25,0.5,1)."""
    return ",".join(f"{f:g}" for f in shares)


def _check_same_settings(study: Study, settings: StudySettings) -> None:
    """``--resume`` with other settings than the study started with would mix two studies."""
    saved = study.state.settings
    for key, value in settings.given().items():
        was = getattr(saved, key)
        if key in ("out", "resume") or (key == "models" and was is None and "models" not in saved.model_fields_set):
            continue
        if key == "fractions" and was is not None:
            value, was = _fraction_text(parse_fractions(value)), _fraction_text(parse_fractions(was))
        if key == "data" and was is not None and Path(str(value)) == Path(str(was)):
            continue
        if value != was:
            if key == "tune":
                said = "with a search per candidate" if was else "with --no-tune"
                raise CnnlabError(f"{study.group.state_path} was started {said}: resume it the same way")
            raise CnnlabError(
                f"{study.group.state_path} was started with {StudySettings.flag(key)} {was!r}, not "
                f"{value!r}: resume with the same settings (or none), or start a new study with another --out"
            )


def _reopen(out: Path) -> Study:
    study = Study.open(out)
    if study.state.status == "completed":
        log.info("study %s is already complete; rewriting its report", out)
    return study


def _start(settings: StudySettings, out: Path, shares: list[float], progress: bool, t0: float) -> Study:
    data, data_dir, models, folds = settings.data, settings.data_dir, settings.models, settings.folds
    seed, seeds, batch_size, tune = settings.seed, settings.seeds, settings.batch_size, settings.tune
    options, budget_s = settings.data_options, settings.budget
    assert data is not None  # a new study has DATA (its settings check it)
    pairs = parse_models(models) if models else None  # checked before any work
    try:
        dc = DataConfig(source=data, **({"data_dir": data_dir} if data_dir else {}), **options)
    except ValidationError as e:
        field = str(e.errors()[0]["loc"][0]) if e.errors()[0]["loc"] else "source"
        what = f"DATA {data!r}" if field == "source" else "--" + field.replace("_", "-")
        raise CnnlabError(f"{what}: {e.errors()[0]['msg']}") from None
    problem = source_problem(dc)
    if problem:
        raise CnnlabError(f"DATA {data!r}: {problem}")
    log.info("study: inspecting %s", data)
    report = inspect_dataset(dc, seed=seed, progress=progress)
    multilabel = report.multilabel
    if multilabel and seeds > 1:
        raise CnnlabError(
            f"{data}: multi-label data with --seeds: not supported yet (the seeded test pairs single-label "
            "answers); leave --seeds out"
        )
    if multilabel and folds:
        raise CnnlabError(
            f"{data}: multi-label data with --folds: a multi-label study uses one split (its paired mAP test "
            "pairs the test images); leave --folds out"
        )
    prepared = prepare_data(dc, get_spec("cnn"), dc.split_seed, progress=progress)
    sizes, smallest, small = split_facts(prepared, report.presplit or bool(shares or folds) or seeds > 1)
    size, channels, k = prepared.input_size, prepared.channels, len(prepared.classes)
    ratio = report.imbalance_ratio or 1.0
    pairs = pairs or default_models(size)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "inspect.json", report.document())
    state = StudyState(
        settings=settings.model_copy(update={"out": str(out)}),
        started=now(),
        fractions=shares or [],
        sizes=sizes,
        input_size=size,
        channels=channels,
        classes=prepared.classes,
        presplit=report.presplit,
        smallest_pool_class=smallest,
        imbalance_ratio=ratio,
        class_weights=ratio >= IMBALANCE_FOR_WEIGHTS and not multilabel,  # weights are for one label each
        multilabel=multilabel,
        notes=["multi-label data: ranked by validation mAP, one train/val/test split"] if multilabel else [],
        small_data=small,
        split_sizes=sizes,
    )
    if small:
        state.sizes = {"train": sizes["train"] + sizes["test"], "val": sizes["val"], "test": 0}
    study = Study(out, state)
    study.cands = make_candidates(pairs, size, sizes["train"], batch_size)
    probe_all(study, (channels, size, k, batch_size), probe_share(budget_s, len(study.cands), tune), t0)
    # cheap strong baselines first (a frozen backbone on cached features takes seconds), so that a
    # study cut short by its budget has them; the expensive ones use what is left
    study.cands.sort(
        key=lambda c: (c.status != "planned", c.cost(c.full_epochs, sizes["train"], sizes["val"], sizes["test"]))
    )
    choose_plan(study.state, budget_s - (time.time() - t0))
    study.save(status="running", spent_seconds=round(time.time() - t0, 1))
    return study


def _train_all(study: Study, progress: bool, session: float, spent_before: float) -> None:
    """Train the candidates in order, re-planning the rest from the speed measured so far."""

    s = study.state
    end = session - spent_before + s.budget_seconds  # wall time the budget ends
    for i, c in enumerate(study.cands):
        if c.status not in ("planned", "running"):
            continue
        rest = [r for r in study.cands[i + 1 :] if r.status == "planned"]
        deadline = end - deadline_reserve(s, c, rest)
        # out of time: dropped, unless no candidate has a result yet (the first trains its epoch regardless)
        if time.time() >= deadline - 1 and c.status == "planned" and any(x.status == "done" for x in study.cands):
            c.status, c.why = "dropped", "the budget ran out before it started"
            study.save()
            continue
        speed_then = s.speed
        log.info("study: %s (%s, %d epochs%s), about %.0f s", c.name, c.mode, c.epochs,
                 (f" × {s.folds} folds" if s.folds > 1 else "")
                 + (f" × {s.settings.seeds} seeds" if s.settings.seeds > 1 else ""),
                 expected_seconds(s, c))  # fmt: skip
        c.status = "running"
        study.save()
        started = time.time()
        if c.search_trials and not (c.search and "trials" in c.search):
            try:
                _search(study, c, progress, deadline)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # a search that fails leaves the default recipe, said in the report
                log.error("study: the search of %s failed: %s", c.name, e)
                c.search = {"note": f"the search failed: {str(e)[:200]}"}
            study.save()
        searched = time.time() - started
        several = sum(x.status != "failed" for x in study.cands) > 1
        # the cap counts from the end of the search: a search that ran to its share must not leave
        # the final run one epoch (the deadline still keeps the time the others need)
        guard = TimeBudget(
            min(deadline, time.time() + MAX_SHARE * s.budget_seconds) if several else deadline, what=STUDY_BUDGET
        )
        try:
            _fit(study, c, study.folder(c), guard, progress)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one candidate failing does not sink the study
            log.error("study: %s failed: %s", c.name, e)
            c.status, c.why = "failed", str(e)[:300]
            study.save()
            continue
        c.status = "done"
        record_timing(s, c, time.time() - started, searched, speed_then)
        replan_rest(s, study.cands[i + 1 :], end - time.time())
        study.save(spent_seconds=round(spent_before + time.time() - session, 1))
    if s.folds > 1 and not s.small_data:  # small data: the out-of-fold figures are the test figures
        _train_winner(study, progress)
    if s.fractions:
        _train_fractions(study, progress, end)


def _train_fractions(study: Study, progress: bool, end: float) -> None:
    """The learning curves' runs: each finished candidate, with its recipe (searched values
    included), on each smaller share of the training split; the test split is held out (a curve is
    read on validation). A run the budget has no room for is left out, and the curve has one point
    fewer."""
    s = study.state
    for c in [c for c in study.cands if c.status == "done"]:
        for f in [f for f in s.fractions if f < 1]:
            folder = study.fraction_folder(c, f)
            run = RunFolder(folder)
            if run.metrics_json.is_file() and run.state().status == "completed":
                continue
            deadline = end - reserve(s.budget_seconds, 1)
            if time.time() >= deadline - 1:
                log.warning("study: no time left for %s on %g of the training split", c.name, f)
                continue
            cfg = study.config(c, folder, {"data.train_fraction": f})
            log.info("study: %s on %g of the training split (learning curve)", c.name, f)
            try:
                with _quiet_trials():
                    budget = TimeBudget(deadline, what=STUDY_BUDGET)
                    train(cfg, overwrite=folder.exists(), callbacks=[budget], progress=False, hold_out_test=True)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # a missing point, not a failed study
                log.error("study: %s on %g of the training split failed: %s", c.name, f, e)
        study.save()


def _fit(study: Study, c: Candidate, folder: Path, guard: TimeBudget, progress: bool) -> None:
    """The candidate's final training: its folds, its seeds or its one run (resumed when begun)."""
    s, seeds = study.state, study.state.settings.seeds
    if s.folds > 1:
        folds = CvSettings(out=str(folder), folds=s.folds, resume=True, seeds=seeds)
        cross_validate(study.config(c, folder), folds, progress, FoldHooks(callbacks=[guard], same_plan=False))
    elif seeds > 1:
        if seed_group(folder).has_state():
            train_seeds(None, TrainPlan(resume=folder), [guard], progress)
        else:
            train_seeds(study.config(c, folder), TrainPlan(seeds, overwrite=folder.exists()), [guard], progress)
    else:
        train_or_resume(study.config(c, folder), callbacks=[guard], progress=progress)


def _search(study: Study, c: Candidate, progress: bool, deadline: float) -> None:
    """The candidate's search through the sweep code: its default recipe first, then random
    points of learning rate and weight decay, each trial ``c.search_epochs`` long, scored on the
    validation split (the test split is held out); the best becomes the candidate's recipe."""
    s = study.state
    folder = study.out / "search" / c.name
    started = time.time()
    if (folder / "sweep.yaml").is_file():
        with _quiet_trials():
            summary = run_sweep(SweepSettings(out=str(folder), resume=True), progress=False).summary
    else:
        if folder.exists():  # killed before the sweep saved its spec: nothing ran yet
            shutil.rmtree(folder)
        base = {**study.base_overrides(), **c.overrides(c.search_epochs)}
        # a pretrained net's features are extracted in its first trial, for the final run too: beyond its
        # share, and never less than the probe says
        features = c.feature_cost(s.sizes["train"], s.sizes["val"]) * max(1.0, s.speed)
        spec = {
            "name": f"{c.name}-search",
            "base": nest_config(base),
            "space": search_space(c),
            "method": "random",  # Optuna's TPE also samples at random for its first 10 trials
            "trials": c.search_trials,
            "timeout": max(1.0, min(c.search_seconds + features, deadline - time.time())),  # its share, in seconds
            "objective": study.monitor,
            "pruner": "none",
            "seed": s.settings.seed,
            "start": [{"optim.lr": default_lr(c), "optim.weight_decay": 0.0}],
        }
        spec_file = study.out / "search" / f"{c.name}.yaml"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec_file, yaml.safe_dump(spec, sort_keys=False))
        log.info("study: searching %s: %d trials of %d epochs, ~%.0f s", c.name, c.search_trials, c.search_epochs,
                 c.search_seconds)  # fmt: skip
        with _quiet_trials():  # the sweep's one line per trial, not every trial's epochs
            summary = run_sweep(SweepSettings(spec=str(spec_file), out=str(folder)), progress=False).summary
    done = [t for t in summary.trials if t["state"] == "complete" and t["value"] is not None]
    default = next((t["value"] for t in done if t["trial"] == 0), None)
    best = summary.best
    c.search = {
        "trials": len(done),
        "epochs": c.search_epochs,
        "default_val": default,
        "tuned_val": best["value"] if best else None,
        "params": best["params"] if best else {},
        "seconds": round(time.time() - started, 1),
        "folder": str(folder.relative_to(study.out)),
    }
    c.params = dict(best["params"]) if best else {}
    log.info(
        "study: %s searched: %s %s with its default recipe, %s tuned (%s)",
        c.name,
        study.monitor,
        "-" if default is None else f"{default:.4f}",
        "-" if best is None else f"{best['value']:.4f}",
        ", ".join(f"{k.split('.')[-1]} {v:.3g}" for k, v in c.params.items()) or "nothing completed",
    )


TRIAL_LOGGERS = ("cnnlab.train", "cnnlab.data", "cnnlab.models", "cnnlab.runs", "cnnlab.workflows.training",
                 "cnnlab.workflows.evaluation")  # fmt: skip


@contextlib.contextmanager
def _quiet_trials() -> Iterator[None]:
    """Warnings only from the trainings inside a search (each trial's data, model and epoch lines)."""
    loggers = [logging.getLogger(name) for name in TRIAL_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(logging.WARNING, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ranked(study: Study) -> list[Candidate]:
    done = [c for c in study.cands if c.status == "done"]
    return sorted(done, key=lambda c: -_selection_score(study, c))


def _selection_score(study: Study, c: Candidate) -> float:
    """Validation accuracy (CV: out-of-fold mean), never the test split."""

    if study.state.folds > 1:
        cv = read_cv(study.folder(c))
        return cv.summary["accuracy"].mean if cv else float("-inf")
    runs = seed_runs(study.folder(c), study.seeds) if len(study.seeds) > 1 else [RunFolder(study.folder(c))]
    return float(np.mean([best_row(r).get(study.monitor, float("-inf")) for r in runs]))


def _train_winner(study: Study, progress: bool) -> None:
    """After cross-validation: the winner once on the usual split, for its test figures."""

    ranked = _ranked(study)
    if not ranked:
        return
    w = ranked[0]
    folder = study.out / "winner"
    run = RunFolder(folder)
    previous = study.state.winner
    if run.metrics_json.is_file() and run.state().status == "completed" and previous == w.name:
        return
    study.save(winner=w.name)
    log.info("study: %s won the cross-validation; training it once on the train/val split for its test figures", w.name)
    if previous not in (None, w.name) and folder.exists():  # the folder holds another candidate's run
        train(study.config(w, folder), overwrite=True, progress=progress)
    else:
        train_or_resume(study.config(w, folder), progress=progress)


def _finish(study: Study, progress: bool) -> StudySummary:
    """Per-candidate results, intervals, paired differences: everything the report shows."""

    return collect(study, _ranked(study))
