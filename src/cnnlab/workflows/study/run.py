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
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from cnnlab.core.atomic import atomic_write_json, atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import DataConfig, nest_config
from cnnlab.core.settings import CvSettings, StudySettings, SweepSettings
from cnnlab.data.inspect import inspect_dataset
from cnnlab.data.pipeline import prepare_data
from cnnlab.models.factory import get_spec
from cnnlab.reports.study import format_summary, write_study_report
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.store import RunFolder, now
from cnnlab.train.callbacks import TimeBudget
from cnnlab.workflows.cv import FoldHooks, cross_validate, read_cv
from cnnlab.workflows.resolve import source_problem
from cnnlab.workflows.seeded import SeedPlan, train_seeds
from cnnlab.workflows.seeds import seed_group, seed_list, seed_runs
from cnnlab.workflows.study.curves import parse_fractions
from cnnlab.workflows.study.plan import (
    IMBALANCE_FOR_WEIGHTS,
    MAX_SHARE,
    SEARCH_SHARE,
    Candidate,
    default_lr,
    default_models,
    fit_search,
    make_candidates,
    parse_models,
    plan_epochs,
    plan_searches,
    probe,
    search_space,
    shrink_to_fit,
)
from cnnlab.workflows.study.results import best_row, collect
from cnnlab.workflows.study.state import Study, StudyResult, study_group
from cnnlab.workflows.sweep.runner import run_sweep
from cnnlab.workflows.training import announce_board, train, train_or_resume

log = logging.getLogger(__name__)

AUTO_FOLDS = (5, 3)


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
    spent_before = study.state.get("spent_seconds", 0.0) if settings.resume else 0.0

    def spent() -> float:
        return round(spent_before + time.time() - t0, 1)

    try:
        _train_all(study, progress, t0, spent_before)
        if not any(c.status == "done" for c in study.cands):
            study.save(status="failed", spent_seconds=spent())
            why = "; ".join(f"{c.name}: {c.why}" for c in study.cands if c.why)
            raise CnnlabError(
                f"no candidate finished within the {study.state['budget_seconds']:.0f} s budget ({why}); "
                "start again with a larger --budget"
            )
        summary = _finish(study, progress)
    except KeyboardInterrupt:
        study.save(status="interrupted", spent_seconds=spent())
        log.warning("study interrupted; continue with: cnnlab study --resume --out %s", out)
        raise
    study.save(status="completed", finished=now(), spent_seconds=spent(), summary=summary)
    note = _test_set_note(study)
    if note and isinstance(study.state.get("summary"), dict):
        study.state["summary"]["test_set_note"] = note
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
        study.save(audit_labels=settings.audit_labels)
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


def _check_same_settings(study: Study, settings: StudySettings) -> None:
    """``--resume`` with other settings than the study started with would mix two studies."""
    s = study.state
    saved = {
        "data": s.get("data"),
        "data_dir": s.get("data_dir"),
        "models": s.get("models_requested"),
        "folds": s.get("folds_requested"),
        "seed": s.get("seed"),
        "seeds": s.get("seeds", 1),
        "batch_size": s.get("batch_size"),
        "device": s.get("device"),
        "budget": s.get("budget_seconds"),
        "tune": s.get("tune", False),
        "fractions": s.get("fractions_requested"),
        "audit_labels": s.get("audit_labels", False),
        "group_by": (s.get("data_options") or {}).get("group_by"),
        "on_leak": (s.get("data_options") or {}).get("on_leak", StudySettings.model_fields["on_leak"].default),
    }
    for key, value in settings.given().items():
        if key in ("out", "resume") or (key == "models" and "models_requested" not in s):
            continue
        if key == "fractions":
            value = _fraction_text(parse_fractions(value))
        if key == "data" and saved["data"] is not None and Path(str(value)) == Path(str(saved["data"])):
            continue
        if value != saved[key]:
            if key == "tune":
                said = "with a search per candidate" if saved[key] else "with --no-tune"
                raise CnnlabError(f"{study.group.state_path} was started {said}: resume it the same way")
            raise CnnlabError(
                f"{study.group.state_path} was started with {StudySettings.flag(key)} {saved[key]!r}, not "
                f"{value!r}: resume with the same settings (or none), or start a new study with another --out"
            )


def _reopen(out: Path) -> Study:
    state = study_group(out).read()
    if state.get("status") == "completed":
        log.info("study %s is already complete; rewriting its report", out)
    return Study(out, state)


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
    multilabel = bool(report["multilabel"])
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
    sizes = {k: int(len(v)) for k, v in prepared.splits.items()}
    if min(sizes.get("train", 0), sizes.get("val", 0), sizes.get("test", 0)) == 0:
        raise CnnlabError(f"{data}: the split has {sizes}; a study needs images in train, val and test")
    size, channels, k = prepared.input_size, prepared.channels, len(prepared.classes)
    ratio = report["imbalance_ratio"] or 1.0
    pool = np.concatenate([prepared.splits["train"], prepared.splits["val"]])
    y = prepared.labels.numpy()[pool]
    smallest = int((y.sum(0) if multilabel else np.bincount(y, minlength=len(prepared.classes))).min())
    pairs = pairs or default_models(size)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "inspect.json", report)
    state = {
        "status": "planning",
        "started": now(),
        "data": data,
        "data_dir": data_dir,
        "data_options": options,
        "budget_seconds": budget_s,
        "seed": seed,
        "seeds": seeds,
        "batch_size": batch_size,
        "device": settings.device,
        "folds_requested": folds,
        "models_requested": models,
        "folds": 1,
        "tune": tune,
        "fractions": shares or [],
        "fractions_requested": _fraction_text(shares) if shares else None,
        "sizes": sizes,
        "input_size": size,
        "channels": channels,
        "classes": prepared.classes,
        "presplit": report["presplit"],
        "smallest_pool_class": smallest,
        "imbalance_ratio": ratio,
        "class_weights": ratio >= IMBALANCE_FOR_WEIGHTS and not multilabel,  # weights are for one label each
        "multilabel": multilabel,
        "notes": ["multi-label data: ranked by validation mAP, one train/val/test split"] if multilabel else [],
    }
    study = Study(out, state)
    study.cands = make_candidates(pairs, size, sizes["train"], batch_size)
    # a pretrained net's full recipe may take at most its share of the trainings' time at its size
    share = MAX_SHARE * (1 - SEARCH_SHARE if tune else 1) * (budget_s - _reserve(budget_s, len(study.cands)))
    for c in study.cands:
        try:
            probe(c, channels, size, k, batch_size)
            if get_spec(c.model).pretrained and shrink_to_fit(c, share - (time.time() - t0), sizes):
                log.info("study: %s at its native size costs more than its share: %d px instead", c.name,
                         c.input_size)  # fmt: skip
                probe(c, channels, size, k, batch_size)  # timed again at the size it will train at
        except Exception as e:  # a model that cannot even be built here is left out, with the reason
            c.status, c.why = "failed", f"could not be built: {e}"
            log.warning("study: %s left out: %s", c.name, c.why)
            continue
        log.info(
            "study: probe %-28s %.2f ms/image training, %.2f ms/image inference",
            c.name,
            c.train_s * 1e3,
            c.eval_s * 1e3,
        )
    # cheap strong baselines first (a frozen backbone on cached features takes seconds), so that a
    # study cut short by its budget has them; the expensive ones use what is left
    study.cands.sort(
        key=lambda c: (c.status != "planned", c.cost(c.full_epochs, sizes["train"], sizes["val"], sizes["test"]))
    )
    _choose_plan(study, budget_s - (time.time() - t0))
    study.save(status="running", spent_seconds=round(time.time() - t0, 1))
    return study


def _reserve(budget_s: float, n: int) -> float:
    """Seconds kept for the end: latency probes, bootstrap intervals, figures, the report."""
    return 4.0 + 0.5 * n + 0.04 * budget_s


def _choose_plan(study: Study, left: float) -> None:
    """The searches' equal shares (``SEARCH_SHARE`` of the training time), then folds and epochs
    in what is left (``_plan_trainings``); time the trainings leave over widens the searches."""
    s = study.state
    sizes = s["sizes"]
    live = [c for c in study.cands if c.status == "planned"]
    if not live:
        raise CnnlabError(
            "no candidate model could be built for this data: " + "; ".join(f"{c.name}: {c.why}" for c in study.cands)
        )
    avail = left - _reserve(s["budget_seconds"], len(live))
    searches = plan_searches(live, SEARCH_SHARE * avail, sizes) if s.get("tune") else 0.0
    if searches and sum(c.cost(c.min_epochs, sizes["train"], sizes["val"], sizes["test"]) for c in live) > (
        avail - searches
    ):  # the searches would leave too little for the trainings: none then, said per candidate
        for c in live:
            c.search_trials, c.search = 0, {"note": "no search: the budget only fits the trainings"}
        searches = 0.0
    _plan_trainings(study, avail - searches)
    if searches:
        k, n_seeds = s["folds"], s.get("seeds", 1)
        sz = _run_sizes(sizes, k)
        trainings = s.get("winner_reserve", 0.0) + sum(
            k * n_seeds * c.cost(c.epochs, sz["train"], sz["val"], sz["test"]) for c in live if c.status == "planned"
        )
        plan_searches(live, max(SEARCH_SHARE * avail, avail - trainings), sizes)


def _plan_trainings(study: Study, avail: float) -> None:
    """Folds when every candidate gets its full recipe K times over (5, else 3; or the --folds asked
    for, at whatever share of the recipe fits), else one split at the share that fits."""
    s = study.state
    sizes = s["sizes"]
    live = [c for c in study.cands if c.status == "planned"]
    asked = s.get("folds_requested")
    smallest = s["smallest_pool_class"]
    n_seeds = s.get("seeds", 1)
    for k in [] if s.get("multilabel") or s.get("fractions") else [asked] if asked else list(AUTO_FOLDS):
        if k > smallest:
            s["notes"].append(f"{k} folds do not fit the smallest class ({smallest} images outside the test split)")
            continue
        trial = [Candidate(**c.to_dict()) for c in live]
        fold_sizes = _run_sizes(sizes, k)
        winner = max(c.cost(c.full_epochs, sizes["train"], sizes["val"], sizes["test"]) for c in trial)
        if (
            plan_epochs(trial, avail - winner, sizes, runs=k * n_seeds, fold_sizes=fold_sizes)
            and all(c.status == "planned" for c in trial)
            and (asked or all(c.epochs == c.full_epochs for c in trial))
        ):
            for c, t in zip(live, trial):
                c.epochs = t.epochs
            s["folds"], s["winner_reserve"] = k, winner
            log.info("study: %d-fold cross-validation of %d candidates fits the budget", k, len(live))
            return
    if asked:
        s["notes"].append(f"--folds {asked} did not fit the budget: one train/val/test split instead")
    if not plan_epochs(study.cands, avail, sizes, runs=n_seeds * _curve_runs(s)):
        cheapest = min(
            live, key=lambda c: c.cost(c.min_epochs, sizes["train"], sizes["val"], sizes["test"]), default=None
        )
        need = (
            n_seeds * cheapest.cost(cheapest.min_epochs, sizes["train"], sizes["val"], sizes["test"]) if cheapest else 0
        )
        raise CnnlabError(
            f"a budget of {s['budget_seconds']:.0f} s leaves {avail:.0f} s for training after "
            f"inspection and probes; the cheapest candidate needs ~{need:.0f} s: give a larger --budget"
        )
    s["folds"] = 1


def _fraction_text(shares: list[float]) -> str:
    """``--fractions`` as saved and compared on ``--resume`` (0.1,0.25,0.5,1)."""
    return ",".join(f"{f:g}" for f in shares)


def _run_sizes(sizes: dict[str, int], k: int) -> dict[str, int]:
    """The images of one run: the split's, or under K folds a fold's (train+val shared out, no test)."""
    if k <= 1:
        return sizes
    pool = sizes["train"] + sizes["val"]
    return {"train": pool * (k - 1) // k, "val": pool // k, "test": 0}


def _curve_runs(s: dict[str, Any]) -> float:
    """A candidate's trainings counted in whole-split runs: 1, plus its shares of the split with
    ``--fractions`` (a run on a quarter of the images costs about a quarter)."""
    return sum(s.get("fractions") or [1.0])


def _curves_left(study: Study, coming: list[Candidate]) -> float:
    """Predicted seconds of the learning curves' runs still to come (``--fractions``): those of the
    finished candidates and of ``coming``."""
    s = study.state
    if not s.get("fractions"):
        return 0.0
    todo = [c for c in study.cands if c.status == "done" and c not in coming] + coming
    return (
        (_curve_runs(s) - 1)
        * s.get("speed", 1)
        * sum(c.cost(c.epochs, s["sizes"]["train"], s["sizes"]["val"], 0) for c in todo)
    )


def _train_all(study: Study, progress: bool, session: float, spent_before: float) -> None:
    """Train the candidates in order, re-planning the rest from the speed measured so far."""

    s = study.state
    k = s["folds"]
    runs = k * s.get("seeds", 1)  # trainings per candidate
    sizes = s["sizes"]
    fold_sizes = _run_sizes(sizes, k)
    end = session - spent_before + s["budget_seconds"]  # wall time the budget ends
    for i, c in enumerate(study.cands):
        if c.status not in ("planned", "running"):
            continue
        folder = study.folder(c)
        rest = [r for r in study.cands[i + 1 :] if r.status == "planned"]
        reserve = _reserve(s["budget_seconds"], len(rest) + 1) + sum(
            (
                runs * r.cost(r.min_epochs, fold_sizes["train"], fold_sizes["val"], fold_sizes["test"])
                + r.search_cost(r.search_trials, r.search_epochs, sizes["train"], sizes["val"])
            )
            * s.get("speed", 1)
            for r in rest
        )
        if k > 1:
            reserve += s.get("winner_reserve", 0.0)
        reserve += _curves_left(study, [c, *rest])  # the learning curves' smaller runs come after
        deadline = end - reserve
        if time.time() >= deadline - 1 and c.status == "planned":
            c.status, c.why = "dropped", "the budget ran out before it started"
            study.save()
            continue
        speed_then = s.get("speed", 1)
        guess = runs * c.cost(c.epochs, fold_sizes["train"], fold_sizes["val"], fold_sizes["test"]) * speed_then
        log.info(
            "study: %s (%s, %d epochs%s), about %.0f s",
            c.name,
            c.mode,
            c.epochs,
            (f" × {k} folds" if k > 1 else "") + (f" × {s['seeds']} seeds" if s.get("seeds", 1) > 1 else ""),
            guess,
        )
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
            min(deadline, time.time() + MAX_SHARE * s["budget_seconds"]) if several else deadline, what=STUDY_BUDGET
        )
        try:
            _fit(study, c, folder, guard, progress)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one candidate failing does not sink the study
            log.error("study: %s failed: %s", c.name, e)
            c.status, c.why = "failed", str(e)[:300]
            study.save()
            continue
        took = time.time() - started
        c.status = "done"
        done = s.setdefault("timing", {})
        search_pred = c.search_cost(c.search_trials, c.search_epochs, sizes["train"], sizes["val"])
        done[c.name] = {  # the training's prediction and time apart from the search's
            "predicted": round(runs * c.cost(c.epochs, fold_sizes["train"], fold_sizes["val"], fold_sizes["test"]), 1),
            "seconds": round(took - searched, 1),
            "search_predicted": round(search_pred, 1),
            "search_seconds": round(searched, 1),
            # what the study expected when it started the candidate: the probe's figure times the speed
            # measured on the candidates before it (the plan and the deadlines use this one)
            "expected": round(guess + search_pred * speed_then, 1),
        }
        pred_sum = sum(v["predicted"] + v.get("search_predicted", 0) for v in done.values())
        took_sum = sum(v["seconds"] + v.get("search_seconds", 0) for v in done.values())
        s["speed"] = max(0.5, min(4.0, took_sum / max(pred_sum, 1e-6)))
        _replan_rest(study, study.cands[i + 1 :], end - time.time(), runs, fold_sizes)
        study.save(spent_seconds=round(spent_before + time.time() - session, 1))
    if k > 1:
        _train_winner(study, progress)
    if s.get("fractions"):
        _train_fractions(study, progress, end)


def _train_fractions(study: Study, progress: bool, end: float) -> None:
    """The learning curves' runs: each finished candidate, with its recipe (searched values
    included), on each smaller share of the training split; the test split is held out (a curve is
    read on validation). A run the budget has no room for is left out, and the curve has one point
    fewer."""
    s = study.state
    for c in [c for c in study.cands if c.status == "done"]:
        for f in [f for f in s["fractions"] if f < 1]:
            folder = study.fraction_folder(c, f)
            run = RunFolder(folder)
            if run.metrics_json.is_file() and run.state().status == "completed":
                continue
            deadline = end - _reserve(s["budget_seconds"], 1)
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
    s = study.state
    if s["folds"] > 1:
        folds = CvSettings(out=str(folder), folds=s["folds"], resume=True, seeds=s.get("seeds", 1))
        cross_validate(study.config(c, folder), folds, progress, FoldHooks(callbacks=[guard], same_plan=False))
    elif s.get("seeds", 1) > 1:
        if seed_group(folder).has_state():
            train_seeds(None, SeedPlan(resume=folder), [guard], progress)
        else:
            train_seeds(study.config(c, folder), SeedPlan(s["seeds"], overwrite=folder.exists()), [guard], progress)
    else:
        train_or_resume(study.config(c, folder), callbacks=[guard], progress=progress)


def _replan_rest(study: Study, after: list[Candidate], left: float, runs: int, fold_sizes: dict[str, int]) -> None:
    """The candidates still to come, re-planned from the measured speed: their searches keep their
    equal shares (fewer or more trials), their epochs share what is left, each within the cap."""
    s = study.state
    speed = s["speed"]
    for r in after:  # the measured speed may make room for one dropped at the start
        if r.status == "dropped" and r.why.startswith("does not fit"):
            r.status, r.why = "planned", ""
    rest = [r for r in after if r.status == "planned"]
    if not rest:
        return
    searches = 0.0
    for r in rest:
        if r.search_seconds and not (r.search and "trials" in r.search):
            fit_search(r, s["sizes"], speed)
            searches += r.search_cost(r.search_trials, r.search_epochs, s["sizes"]["train"], s["sizes"]["val"])
    several = sum(c.status != "failed" for c in study.cands) > 1
    left -= _curves_left(study, [])  # the finished candidates' curve runs (the rest's are in runs)
    plan_epochs(
        rest,
        (left - _reserve(s["budget_seconds"], len(rest)) - s.get("winner_reserve", 0.0)) / speed - searches,
        s["sizes"],
        runs=runs * _curve_runs(s),
        fold_sizes=fold_sizes,
        cap=MAX_SHARE * s["budget_seconds"] / speed if several else None,
    )


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
        features = c.feature_cost(s["sizes"]["train"], s["sizes"]["val"]) * max(1.0, s.get("speed", 1.0))
        spec = {
            "name": f"{c.name}-search",
            "base": nest_config(base),
            "space": search_space(c),
            "method": "random",  # Optuna's TPE also samples at random for its first 10 trials
            "trials": c.search_trials,
            "timeout": max(1.0, min(c.search_seconds + features, deadline - time.time())),  # its share, in seconds
            "objective": study.monitor,
            "pruner": "none",
            "seed": s["seed"],
            "start": [{"optim.lr": default_lr(c), "optim.weight_decay": 0.0}],
        }
        spec_file = study.out / "search" / f"{c.name}.yaml"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec_file, yaml.safe_dump(spec, sort_keys=False))
        log.info("study: searching %s: %d trials of %d epochs, ~%.0f s", c.name, c.search_trials, c.search_epochs,
                 c.search_seconds)  # fmt: skip
        with _quiet_trials():  # the sweep's one line per trial, not every trial's epochs
            summary = run_sweep(SweepSettings(spec=str(spec_file), out=str(folder)), progress=False).summary
    done = [t for t in summary["trials"] if t["state"] == "complete" and t["value"] is not None]
    default = next((t["value"] for t in done if t["trial"] == 0), None)
    best = summary.get("best")
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

    if study.state["folds"] > 1:
        cv = read_cv(study.folder(c))
        return cv["summary"]["accuracy"]["mean"] if cv else float("-inf")
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
    previous = study.state.get("winner")
    if run.metrics_json.is_file() and run.state().status == "completed" and previous == w.name:
        return
    study.save(winner=w.name)
    log.info("study: %s won the cross-validation; training it once on the train/val split for its test figures", w.name)
    if previous not in (None, w.name) and folder.exists():  # the folder holds another candidate's run
        train(study.config(w, folder), overwrite=True, progress=progress)
    else:
        train_or_resume(study.config(w, folder), progress=progress)


def _finish(study: Study, progress: bool) -> dict[str, Any]:
    """Per-candidate results, intervals, paired differences: everything the report shows."""

    return collect(study, _ranked(study))
