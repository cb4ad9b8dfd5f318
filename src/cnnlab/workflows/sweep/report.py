"""The sweep report: sweep.json and one self-contained sweep.html (trial table, best config as
YAML, validation band, parameter importance beside signed correlation, parallel coordinates,
objective against each parameter). Built from the study and the trials' run folders, so it can be
rebuilt at any time, also while the sweep runs (`cnnlab sweep-report DIR`)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnlab.core.atomic import atomic_write_json, atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.state import SweepSummary
from cnnlab.evaluate import plots
from cnnlab.reports.sweep import Figure, SweepView, sweep_page
from cnnlab.runs.store import RunFolder, now
from cnnlab.workflows.sweep.spec import Param, SweepSpec, decode_params, periods_per_epoch, trial_config
from cnnlab.workflows.sweep.state import (
    BEST_EPOCH,
    ERROR,
    HOST,
    RETRY_OF,
    RUN,
    SECONDS,
    SETUP_SECONDS,
    SPEC_FILE,
    VERDICT,
    Sweep,
    count,
    died,
    open_sweep,
    outcome,
)

log = logging.getLogger(__name__)


def trial_rows(sweep: Sweep, trials: list[Any]) -> list[dict[str, Any]]:
    """One row per trial: outcome, objective, best epoch, minimum losses, time, values, run."""
    spec = sweep.spec
    per_epoch = periods_per_epoch(spec)
    rows = []
    for t in trials:
        a = t.user_attrs
        state = outcome(t, trials) if not died(t) else "failed"
        row: dict[str, Any] = {
            "trial": t.number,
            "state": state,
            "value": t.value if t.value is not None else _last(t),
            "params": decode_params(spec, t.params),
            "best_epoch": a[BEST_EPOCH] / per_epoch if per_epoch > 1 and a.get(BEST_EPOCH) else a.get(BEST_EPOCH),
            # the last validation it reported (a pruned trial's: where it was stopped), in epochs
            "last_epoch": _in_epochs(max(t.intermediate_values), per_epoch) if t.intermediate_values else None,
            "seconds": a.get(SECONDS),
            "setup_seconds": a.get(SETUP_SECONDS),
            "run": a.get(RUN),
            "host": a.get(HOST),
            "retry_of": a.get(RETRY_OF),
            "note": _note(t, trials),
            "started_at": t.datetime_start.timestamp() if t.datetime_start else None,
            "finished_at": t.datetime_complete.timestamp() if t.datetime_complete else None,
        }
        run = sweep.path / a[RUN] if a.get(RUN) else None
        hist = RunFolder(run).history() if run is not None and (run / "history.csv").is_file() else []
        if run is not None and spec.cv:
            hist = _cv_history(run)
        for key in ("train_loss", "val_loss"):
            vals = [h[key] for h in hist if isinstance(h.get(key), float) and math.isfinite(h[key])]
            row[f"min_{key}"] = min(vals) if vals else None
        row["curve"] = [
            [round(h["epoch"] / per_epoch, 4), h[spec.objective]]  # validations at fractions of an epoch
            for h in hist
            if isinstance(h.get(spec.objective), float) and isinstance(h.get("epoch"), float)
        ]
        page = run / ("cv.html" if spec.cv else "report.html") if run is not None else None
        row["page"] = str(page.relative_to(sweep.path)) if page is not None and page.is_file() else None
        rows.append(row)
    return rows


def _in_epochs(period: int, per_epoch: int) -> float | int:
    return round(period / per_epoch, 4) if per_epoch > 1 else period


def _last(t: Any) -> float | None:
    """A pruned trial's value: its last reported one."""
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def _note(t: Any, trials: list[Any]) -> str:
    a = t.user_attrs
    if a.get(VERDICT) not in (None, "run"):
        return f"not trained: {a[VERDICT]}"
    if died(t):
        retry = next((r.number for r in trials if r.user_attrs.get(RETRY_OF) == t.number), None)
        why = a.get("died") or "its worker stopped (no heartbeat for a minute)"
        return why + (f"; retried as trial {retry}" if retry is not None else "")
    if a.get(ERROR):
        return a[ERROR]
    if a.get(RETRY_OF) is not None:
        return f"retry of trial {a[RETRY_OF]}"
    return ""


def _cv_history(folder: Path) -> list[dict[str, Any]]:
    """A CV trial's per-epoch mean over its folds (for the band)."""
    folds = [RunFolder(p).history() for p in sorted(folder.glob("r*-fold*")) if (p / "history.csv").is_file()]
    if not folds:
        return []
    n = min(len(h) for h in folds)
    out = []
    for i in range(n):
        row: dict[str, Any] = {"epoch": float(i + 1)}
        for key in folds[0][i]:
            vals = [h[i].get(key) for h in folds]
            if all(isinstance(v, float) for v in vals):
                row[key] = float(np.mean(vals))
        out.append(row)
    return out


def importance(sweep: Sweep, study: Any) -> dict[str, dict[str, float]]:
    """Optuna's fANOVA and PED-ANOVA importances over the completed trials (empty when fewer than
    two completed trials or no parameter varied)."""
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    varied = [k for k in sweep.spec.space if len({repr(t.params.get(k)) for t in done}) > 1]
    out: dict[str, dict[str, float]] = {}
    if len(done) < 2 or not varied:
        return out
    evaluators = {
        "fanova": optuna.importance.FanovaImportanceEvaluator(seed=sweep.spec.seed),
        "ped_anova": optuna.importance.PedAnovaImportanceEvaluator(),
    }
    for name, ev in evaluators.items():
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                values = dict(optuna.importance.get_param_importances(study, evaluator=ev, params=varied))
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials for this evaluator
            log.info("sweep report: %s importance not computed (%s)", name, e)
            continue
        equal = [str(w.message) for w in said if "importances will be equal" in str(w.message)]
        if equal:  # PED-ANOVA on too few trials: every parameter gets the same figure, which says nothing
            log.info("sweep report: %s importance not shown (%s)", name, equal[0])
            continue
        out[name] = values
    return out


def correlations(spec: SweepSpec, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Pearson correlation of each parameter with the objective over completed trials (a log-scale
    parameter by its logarithm; each value of a choice as a 0/1 indicator, like W&B)."""
    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    y = np.array([r["value"] for r in done], dtype=float)
    out: dict[str, float] = {}
    if len(done) < 3 or np.ptp(y) == 0:
        return out
    for key, p in spec.space.items():
        assert isinstance(p, Param)
        vals = [r["params"].get(key) for r in done]
        if p.type == "choice" and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            for level in {json.dumps(v) for v in vals}:
                x = np.array([json.dumps(v) == level for v in vals], dtype=float)
                if np.ptp(x) > 0:
                    out[f"{key}={json.loads(level)}"] = float(np.corrcoef(x, y)[0, 1])
            continue
        x = np.array([math.log(v) if p.log else v for v in vals], dtype=float)
        if np.ptp(x) > 0:
            out[key] = float(np.corrcoef(x, y)[0, 1])
    return out


def best_config(sweep: Sweep, rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """The best completed trial's row and its resolved config as a YAML ready for `cnnlab train`."""
    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    if not done:
        return None, None
    pick = min if sweep.spec.direction == "minimize" else max
    best = pick(done, key=lambda r: r["value"])
    cfg_file = sweep.path / best["run"] / ("r1-fold1/config.yaml" if sweep.spec.cv else "config.yaml")
    if cfg_file.is_file():
        tree = yaml.safe_load(cfg_file.read_text())
    else:  # ran on another machine (shared PostgreSQL study): rebuild it from the spec
        tree = trial_config(sweep.spec, best["params"]).model_dump(mode="json")
    tree.setdefault("run", {})["out"] = None
    head = (
        f"# best of sweep {sweep.study_name}: trial {best['trial']}, {sweep.spec.objective} = {best['value']:.4f}\n"
        f"# re-train on the full split (the test split is used once, here):\n"
        f"#   cnnlab train --config best.yaml --out runs/best\n"
    )
    return best, head + yaml.safe_dump(tree, sort_keys=False)


def write_sweep_report(sweep: Sweep) -> SweepSummary:
    """Write sweep.json, best.yaml and sweep.html in the sweep folder; returns the summary."""
    study = sweep.study()
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(sweep, trials)
    c = count(trials)
    best, best_yaml = best_config(sweep, rows)
    summary = SweepSummary(
        study=sweep.study_name,
        written=now(),
        objective=sweep.spec.objective,
        direction=sweep.spec.direction,
        method=sweep.spec.method,
        budget=sweep.spec.budget(),
        done=c.done,
        outcomes=c.by_outcome,
        running=c.running,
        waiting=c.waiting,
        best=best,
        pace=pace(rows, sweep.spec.direction),
        importance=importance(sweep, study),
        correlation=correlations(sweep.spec, rows),
        trials=rows,
        spec=sweep.spec.model_dump(mode="json", exclude_none=True),
    )
    atomic_write_json(sweep.path / "sweep.json", summary.model_dump(mode="json"))
    if best_yaml:
        atomic_write_text(sweep.path / "best.yaml", best_yaml)
    with tempfile.TemporaryDirectory() as tmp:
        figures = [Figure(*f) for f in _figures(sweep, summary, Path(tmp))]
        page = sweep_page(SweepView.of(sweep.study_name, sweep.spec, summary), figures, best_yaml)
    atomic_write_text(sweep.path / "sweep.html", page)
    return summary


def pace(rows: list[dict[str, Any]], direction: str) -> dict[str, Any]:
    """Trials finished per hour of wall time since the first trial started, the best completed
    value so far at each trial's end (``best_over_time``: [minutes, value]) and the median
    trial's fixed cost (its start to its first batch: config, data, model)."""
    starts = [r["started_at"] for r in rows if r.get("started_at")]
    ends = sorted((r["finished_at"], r) for r in rows if r.get("finished_at"))
    setups = sorted(r["setup_seconds"] for r in rows if r.get("setup_seconds") is not None)
    setup = setups[len(setups) // 2] if setups else None  # the median trial's fixed cost
    if not starts or not ends:
        return {"trials_per_hour": None, "wall_hours": None, "best_over_time": [], "median_setup_seconds": setup}
    t0 = min(starts)
    hours = max(ends[-1][0] - t0, 1e-9) / 3600
    better = min if direction == "minimize" else max
    best, curve = None, []
    for end, r in ends:
        if r["state"] == "complete" and r["value"] is not None:
            best = r["value"] if best is None else better(best, r["value"])
        if best is not None:
            curve.append([round((end - t0) / 60, 3), best])
    return {
        "trials_per_hour": len(ends) / hours,
        "wall_hours": hours,
        "best_over_time": curve,
        "median_setup_seconds": setup,
    }


def rebuild(path: str | Path, storage: str | None = None) -> Path:
    """`cnnlab sweep-report DIR`: the report again, from the study as it is now."""
    path = Path(path)
    if not (path / SPEC_FILE).is_file():
        raise CnnlabError(f"{str(path)!r} is not a sweep folder (no {SPEC_FILE})")
    write_sweep_report(open_sweep(None, path, storage, resume=True))
    return path / "sweep.html"


def _figures(sweep: Sweep, s: SweepSummary, tmp: Path) -> list[tuple[str, str, Path, str]]:
    """(id, title, png, caption) of each figure that the trials so far can support (captions are text)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    spec, rows = sweep.spec, s.trials
    obj = spec.objective
    figs = []
    curves = [r["curve"] for r in rows if r["curve"]]
    if curves:
        n = max(len(c) for c in curves)
        fig, ax = plt.subplots(figsize=(7, 4))
        for c in curves:
            ax.plot([e for e, _ in c], [v for _, v in c], color="tab:gray", alpha=0.25, linewidth=1)
        ep = np.arange(1, n + 1) / periods_per_epoch(spec)
        by_ep = [[c[i][1] for c in curves if len(c) > i] for i in range(n)]
        lo, mean, hi = ([f(v) for v in by_ep] for f in (np.min, np.mean, np.max))
        ax.fill_between(ep, lo, hi, alpha=0.25, color="tab:blue", label="min – max over trials")
        ax.plot(ep, mean, color="tab:blue", linewidth=2, label="mean")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(obj.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{obj} across {len(curves)} trials")
        figs.append(
            (
                "band",
                "Validation band",
                plots.save_figure(fig, tmp / "band.png"),
                "Per epoch: the lowest, mean and highest validation value across trials (grey: each trial).",
            )
        )
    over_time = s.pace.get("best_over_time") or []
    if len(over_time) >= 2:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.step([m for m, _ in over_time], [v for _, v in over_time], where="post", color="tab:blue")
        ax.plot([m for m, _ in over_time], [v for _, v in over_time], "o", color="tab:blue", markersize=3)
        ax.set_xlabel("minutes since the first trial started")
        ax.set_ylabel(f"best {obj.replace('_', ' ')} so far")
        ax.grid(alpha=0.3)
        figs.append(
            (
                "over-time",
                "Best so far against wall time",
                plots.save_figure(fig, tmp / "over_time.png"),
                f"The best completed trial's objective at each trial's end; "
                f"{s.pace['trials_per_hour']:.0f} trials per hour.",
            )
        )
    imp, corr = s.importance, s.correlation
    if imp or corr:
        fig, axes = plt.subplots(1, 2, figsize=(11, max(2.5, 0.4 * max(len(corr), len(spec.space)) + 1.2)))
        name = "fanova" if "fanova" in imp else next(iter(imp), None)
        vals = imp.get(name, {}) if name else {}
        keys = sorted(vals, key=vals.get)
        axes[0].barh([_short(k) for k in keys], [vals[k] for k in keys], color="tab:blue")
        axes[0].set_title(
            f"importance ({'fANOVA' if name == 'fanova' else 'PED-ANOVA'})"
            if vals
            else "importance (needs ≥ 2 completed trials)"
        )
        axes[0].set_xlabel("share of the objective's variance")
        ckeys = sorted(corr, key=lambda k: abs(corr[k]))
        axes[1].barh(
            [_short(k) for k in ckeys],
            [corr[k] for k in ckeys],
            color=["tab:green" if corr[k] > 0 else "tab:red" for k in ckeys],
        )
        axes[1].axvline(0, color="black", linewidth=0.8)
        axes[1].set_xlim(-1, 1)
        axes[1].set_title("correlation with the objective (signed)" if corr else "correlation (needs ≥ 3 trials)")
        axes[1].set_xlabel(f"Pearson r with {obj}")
        figs.append(
            (
                "importance",
                "Parameter importance and correlation",
                plots.save_figure(fig, tmp / "importance.png"),
                "Left: how much of the objective's variation each parameter explains (Optuna's fANOVA; "
                "the table below also gives PED-ANOVA). Right: the signed correlation, which says in which "
                "direction a parameter helps.",
            )
        )
    done = [r for r in rows if r["state"] in ("complete", "pruned") and r["value"] is not None]
    keys = list(spec.space)
    if len(done) >= 2:
        figs.append(
            (
                "parallel",
                "Parallel coordinates",
                _parallel(spec, done, tmp / "parallel.png"),
                "One line per finished trial, coloured by its objective.",
            )
        )
        figs.append(
            (
                "scatter",
                "Objective against each parameter",
                _scatter(spec, done, keys, tmp / "scatter.png"),
                "Filled: completed; hollow: pruned (its last reported value).",
            )
        )
    return figs


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _axis_values(p: Param, vals: list[Any]) -> tuple[np.ndarray, list[str], list[float]]:
    """A parameter's values on a 0..1 axis, with tick labels."""
    if p.type == "choice":
        levels = [json.dumps(v) for v in (p.values or [])]
        pos = np.array([levels.index(json.dumps(v)) for v in vals], dtype=float)
        n = max(len(levels) - 1, 1)
        return pos / n, [_short(lv.strip('"'), 12) for lv in levels], [i / n for i in range(len(levels))]
    lo, hi = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)  # type: ignore[arg-type]  # low/high are set for a numeric parameter
    x = np.array([(math.log(v) if p.log else v) for v in vals], dtype=float)
    ticks = [p.low, p.high]
    return (x - lo) / (hi - lo), [f"{t:.3g}" for t in ticks], [0.0, 1.0]


def _parallel(spec: SweepSpec, done: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    keys = list(spec.space)
    y = np.array([r["value"] for r in done], dtype=float)
    cols = [_axis_values(spec.space[k], [r["params"].get(k) for r in done])[0] for k in keys]  # type: ignore  # low/high are set for a numeric parameter
    span = np.ptp(y) or 1.0
    cols.append((y - y.min()) / span)
    data = np.stack(cols, 1)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(cols)), 4.2))
    cmap = plt.get_cmap("viridis" if spec.direction == "maximize" else "viridis_r")
    for row, v in sorted(zip(data, y), key=lambda t: t[1] if spec.direction == "maximize" else -t[1]):
        ax.plot(range(len(cols)), row, color=cmap((v - y.min()) / span), alpha=0.8)
    for i, k in enumerate(keys):
        _, labels, pos = _axis_values(spec.space[k], [])  # type: ignore[arg-type]  # low/high are set for a numeric parameter
        for lab, ps in zip(labels, pos):
            ax.text(i + 0.03, ps, lab, fontsize=7, va="center", ha="left", color="#333")
    ax.text(len(keys) + 0.03, 0, f"{y.min():.3g}", fontsize=7, va="center")
    ax.text(len(keys) + 0.03, 1, f"{y.max():.3g}", fontsize=7, va="center")
    for i in range(len(cols)):
        ax.axvline(i, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cols)), [_short(k, 18) for k in keys] + [spec.objective])
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(cols) - 1 + 0.5)
    ax.set_ylim(-0.08, 1.08)
    ax.set_title("parallel coordinates (colour: objective)")
    return plots.save_figure(fig, path)


def _scatter(spec: SweepSpec, done: list[dict[str, Any]], keys: list[str], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, LogLocator, NullFormatter

    cols = min(3, len(keys))
    nrow = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrow, cols, figsize=(4.2 * cols, 3.2 * nrow), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        p = spec.space[k]
        assert isinstance(p, Param)
        for state, face in (("complete", "tab:blue"), ("pruned", "none")):
            pts = [r for r in done if r["state"] == state]
            if not pts:
                continue
            vals = [r["params"].get(k) for r in pts]
            if p.type == "choice":
                levels = [json.dumps(v) for v in (p.values or [])]
                x: Any = [levels.index(json.dumps(v)) for v in vals]
            else:
                x = vals
            ax.scatter(x, [r["value"] for r in pts], facecolors=face, edgecolors="tab:blue", s=28)
        if p.type == "choice":
            ax.set_xticks(
                range(len(p.values or [])), [_short(json.dumps(v).strip('"'), 10) for v in p.values or []], fontsize=8
            )
        elif p.log:
            ax.set_xscale("log")
            # a range under a decade or two gets labelled minor ticks (4e-4, 6e-4, ...) that collide
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_locator(LogLocator(numticks=5))
            if math.log10(p.high / p.low) < 1.5:  # type: ignore[operator]  # low/high are set for a numeric parameter
                ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
                ax.xaxis.set_major_locator(FixedLocator([p.low, math.sqrt(p.low * p.high), p.high]))  # type: ignore[operator]  # low/high are set for a numeric parameter
        ax.set_xlabel(_short(k, 30))
        ax.set_ylabel(spec.objective)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    return plots.save_figure(fig, path)
