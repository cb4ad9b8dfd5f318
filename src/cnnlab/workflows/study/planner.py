"""The study's budget arithmetic, in one place: what is kept for the end, what a candidate's
trainings cost (its folds × seeds, its learning-curve runs), the plan of searches, folds and epochs
that fits the budget, the time kept for the candidates still to come, and the re-plan from the speed
measured so far. It reads and writes the typed state (:class:`cnnlab.core.study.StudyState`);
`run_study` only asks it."""

from __future__ import annotations

import logging

from cnnlab.core.errors import CnnlabError
from cnnlab.core.study import Candidate, StudyState, Timing
from cnnlab.workflows.study.plan import MAX_SHARE, SEARCH_SHARE, fit_search, plan_epochs, plan_searches

__all__ = [
    "AUTO_FOLDS",
    "choose_plan",
    "deadline_reserve",
    "expected_seconds",
    "probe_share",
    "record_timing",
    "replan_rest",
    "reserve",
    "run_sizes",
]

log = logging.getLogger(__name__)

AUTO_FOLDS = (5, 3)


def reserve(budget_s: float, n: int) -> float:
    """Seconds kept for the end: latency probes, bootstrap intervals, figures, the report."""
    return 4.0 + 0.5 * n + 0.04 * budget_s


def probe_share(budget_s: float, n: int, tune: bool) -> float:
    """The most a pretrained net's full recipe may take at its size: its share of the trainings' time."""
    return MAX_SHARE * (1 - SEARCH_SHARE if tune else 1) * (budget_s - reserve(budget_s, n))


def run_sizes(sizes: dict[str, int], k: int) -> dict[str, int]:
    """The images of one run: the split's, or under K folds a fold's (train+val shared out, no test)."""
    if k <= 1:
        return sizes
    pool = sizes["train"] + sizes["val"]
    return {"train": pool * (k - 1) // k, "val": pool // k, "test": 0}


def _runs(s: StudyState) -> int:
    """Trainings per candidate: its folds × its seeds."""
    return s.folds * s.settings.seeds


def _curve_runs(s: StudyState) -> float:
    """A candidate's trainings counted in whole-split runs: 1, plus its shares of the split with
    ``--fractions`` (a run on a quarter of the images costs about a quarter)."""
    return sum(s.fractions or [1.0])


def _cost(s: StudyState, c: Candidate, epochs: int, k: int | None = None) -> float:
    """Predicted seconds of one of ``c``'s runs of ``epochs`` epochs on the split or (``k``) a fold."""
    sz = run_sizes(s.sizes, s.folds if k is None else k)
    return c.cost(epochs, sz["train"], sz["val"], sz["test"])


def _search_cost(s: StudyState, c: Candidate) -> float:
    return c.search_cost(c.search_trials, c.search_epochs, s.sizes["train"], s.sizes["val"])


def expected_seconds(s: StudyState, c: Candidate) -> float:
    """Candidate ``c``'s trainings (every fold and seed) as planned, at the speed measured so far."""
    return _runs(s) * _cost(s, c, c.epochs) * s.speed


def choose_plan(s: StudyState, left: float) -> None:
    """The searches' equal shares (``SEARCH_SHARE`` of the training time), then folds and epochs
    in what is left; time the trainings leave over widens the searches."""
    live = [c for c in s.candidates if c.status == "planned"]
    if not live:
        raise CnnlabError(
            "no candidate model could be built for this data: " + "; ".join(f"{c.name}: {c.why}" for c in s.candidates)
        )
    avail = left - reserve(s.budget_seconds, len(live))
    searches = plan_searches(live, SEARCH_SHARE * avail, s.sizes) if s.settings.tune else 0.0
    if searches and sum(_cost(s, c, c.min_epochs, 1) for c in live) > avail - searches:
        # the searches would leave too little for the trainings: none then, said per candidate
        for c in live:
            c.search_trials, c.search = 0, {"note": "no search: the budget only fits the trainings"}
        searches = 0.0
    _plan_trainings(s, avail - searches)
    if searches:
        trainings = s.winner_reserve + sum(_runs(s) * _cost(s, c, c.epochs) for c in live if c.status == "planned")
        plan_searches(live, max(SEARCH_SHARE * avail, avail - trainings), s.sizes)


def _plan_trainings(s: StudyState, avail: float) -> None:
    """Folds when every candidate gets its full recipe K times over (5, else 3; or the --folds asked
    for, at whatever share of the recipe fits), else one split at the share that fits."""
    live = [c for c in s.candidates if c.status == "planned"]
    asked, smallest, n_seeds = s.settings.folds, s.smallest_pool_class, s.settings.seeds
    for k in [] if s.multilabel or s.fractions else [asked] if asked else list(AUTO_FOLDS):
        if k > smallest:
            s.notes.append(f"{k} folds do not fit the smallest class ({smallest} images outside the test split)")
            continue
        trial = [Candidate(**c.to_dict()) for c in live]
        winner = max(_cost(s, c, c.full_epochs, 1) for c in trial)
        winner = 0.0 if s.small_data else winner  # small data: no winner's run on a split
        if (
            plan_epochs(trial, avail - winner, s.sizes, runs=k * n_seeds, fold_sizes=run_sizes(s.sizes, k))
            and all(c.status == "planned" for c in trial)
            and (asked or s.small_data or all(c.epochs == c.full_epochs for c in trial))
        ):
            for c, t in zip(live, trial):
                c.epochs = t.epochs
            s.folds, s.winner_reserve = k, winner
            if s.small_data:
                sz = s.split_sizes
                s.notes.append(f"{sum(sz.values())} images: a held-out test split would hold {sz.get('test')}, too "
                               "few to tell candidates apart, so every candidate is cross-validated over all of them "
                               "and every figure is out-of-fold")  # fmt: skip
            log.info("study: %d-fold cross-validation of %d candidates fits the budget", k, len(live))
            return
    if asked:
        s.notes.append(f"--folds {asked} did not fit the budget: one train/val/test split instead")
    if s.small_data:  # the folds did not fit: the usual split after all, its test split as small as it is
        s.notes.append("cross-validation did not fit the budget: one train/val/test split instead")
        s.small_data, s.sizes = False, s.split_sizes or s.sizes
    if not plan_epochs(s.candidates, avail, s.sizes, runs=n_seeds * _curve_runs(s)):
        # too little left (a loaded machine, a short budget): the cheapest candidate still trains, at
        # its fewest epochs, and the budget's guard stops it; the dearer ones were dropped
        cheapest = min(live, key=lambda c: _cost(s, c, c.min_epochs, 1))
        cheapest.status, cheapest.why, cheapest.epochs = "planned", "", cheapest.min_epochs
        s.notes.append(
            f"the {max(avail, 0):.0f} s left for training after inspection and probes fit no candidate's plan: "
            f"{cheapest.name}, the cheapest, trained {cheapest.min_epochs} epoch(s) (a larger --budget trains more)"
        )
    s.folds = 1


def _curves_left(s: StudyState, coming: list[Candidate]) -> float:
    """Predicted seconds of the learning curves' runs still to come (``--fractions``): those of the
    finished candidates and of ``coming``."""
    if not s.fractions:
        return 0.0
    todo = [c for c in s.candidates if c.status == "done" and c not in coming] + coming
    return (_curve_runs(s) - 1) * s.speed * sum(c.cost(c.epochs, s.sizes["train"], s.sizes["val"], 0) for c in todo)


def deadline_reserve(s: StudyState, c: Candidate, rest: list[Candidate]) -> float:
    """Seconds to keep back when ``c`` starts: the end's reserve, the shortest trainings and the
    searches of the candidates still to come, the CV winner's run and the learning curves' runs."""
    kept = reserve(s.budget_seconds, len(rest) + 1)
    kept += sum((_runs(s) * _cost(s, r, r.min_epochs) + _search_cost(s, r)) * s.speed for r in rest)
    if s.folds > 1:
        kept += s.winner_reserve
    return kept + _curves_left(s, [c, *rest])


def record_timing(s: StudyState, c: Candidate, took: float, searched: float, speed_then: float) -> None:
    """Candidate ``c`` finished in ``took`` seconds (``searched`` of them its search): its timing
    beside its prediction, and the speed measured over every finished candidate."""
    predicted, search_pred = _runs(s) * _cost(s, c, c.epochs), _search_cost(s, c)
    s.timing[c.name] = Timing(  # the training's prediction and time apart from the search's
        predicted=round(predicted, 1),
        seconds=round(took - searched, 1),
        search_predicted=round(search_pred, 1),
        search_seconds=round(searched, 1),
        # what the study expected when it started the candidate: the probe's figure times the speed
        # measured on the candidates before it (the plan and the deadlines use this one)
        expected=round((predicted + search_pred) * speed_then, 1),
    )
    pred_sum = sum(t.predicted + t.search_predicted for t in s.timing.values())
    took_sum = sum(t.seconds + t.search_seconds for t in s.timing.values())
    s.speed = max(0.5, min(4.0, took_sum / max(pred_sum, 1e-6)))


def replan_rest(s: StudyState, after: list[Candidate], left: float) -> None:
    """The candidates still to come, re-planned from the measured speed: their searches keep their
    equal shares (fewer or more trials), their epochs share what is left, each within the cap."""
    for r in after:  # the measured speed may make room for one dropped at the start
        if r.status == "dropped" and r.why.startswith("does not fit"):
            r.status, r.why = "planned", ""
    rest = [r for r in after if r.status == "planned"]
    if not rest:
        return
    searches = 0.0
    for r in rest:
        if r.search_seconds and not (r.search and "trials" in r.search):
            fit_search(r, s.sizes, s.speed)
            searches += _search_cost(s, r)
    several = sum(c.status != "failed" for c in s.candidates) > 1
    left -= _curves_left(s, [])  # the finished candidates' curve runs (the rest's are in runs)
    plan_epochs(
        rest,
        (left - reserve(s.budget_seconds, len(rest)) - s.winner_reserve) / s.speed - searches,
        s.sizes,
        runs=_runs(s) * _curve_runs(s),
        fold_sizes=run_sizes(s.sizes, s.folds),
        cap=MAX_SHARE * s.budget_seconds / s.speed if several else None,
    )
