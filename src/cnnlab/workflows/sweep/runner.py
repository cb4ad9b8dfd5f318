"""`cnnlab sweep`: an Optuna study whose trials are ordinary run folders, run by one worker or by
several (local processes on a journal file, or machines sharing a PostgreSQL database).

Rules every worker follows, whatever the storage (they rest only on the storage's atomic trial
numbers and on ``flock``):

- **No duplicates, no overshoot.** After a trial has its values it waits until every
  lower-numbered trial has settled, then decides: a trial with the values of an earlier live or
  finished one is a *duplicate* and is skipped (recorded, not trained); one that would exceed the
  trial budget is skipped as *over budget*; otherwise it *runs*. A grid gives trial number n its
  n-th point (Optuna's GridSampler), so parallel workers start on different points.
- **Dead workers.** A local worker holds ``workers/NAME.lock`` while it lives; a running trial
  whose worker's lock is free is failed by the next worker that looks (or by ``--resume``), with
  the reason, and its values are queued once more. On PostgreSQL, Optuna's heartbeat does the
  same across machines.
- **Resume** continues the same study: finished trials are never trained again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnlab.core.errors import CnnlabError
from cnnlab.core.monitor import direction
from cnnlab.core.settings import CvSettings, SweepSettings
from cnnlab.runs.store import RunFolder, RunLock
from cnnlab.train.callbacks import Callback
from cnnlab.train.state import LoopState, StopTraining
from cnnlab.workflows.cv import FoldHooks, cross_validate
from cnnlab.workflows.sweep.report import write_sweep_report
from cnnlab.workflows.sweep.spec import SweepSpec, sampler_for, suggest, trial_config
from cnnlab.workflows.sweep.state import (
    BEST_EPOCH,
    DIED,
    ERROR,
    FAILS_BEFORE_GIVING_UP,
    HEARTBEAT_S,
    HOST,
    REPEATS_BEFORE_GIVING_UP,
    RUN,
    SECONDS,
    SETTLE_WAIT_S,
    SETUP_SECONDS,
    TRIALS,
    VERDICT,
    WORKER,
    WORKER_LOCK,
    WORKERS,
    Pruned,
    Sweep,
    SweepResult,
    count,
    died,
    flock,
    fresh,
    open_sweep,
    outcome,
    retry_dead,
)
from cnnlab.workflows.training import announce_board, train

log = logging.getLogger(__name__)


# --- the state of a study, read the same way by workers, the progress line and the report ---

# --- dead workers ---


def reap(sweep: Sweep, study: Any) -> int:
    """Fail the running trials whose worker is gone, with the reason, and retry each once."""
    import optuna
    from optuna.trial import TrialState

    if sweep.storage_url:  # PostgreSQL's heartbeat (calls retry_dead)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    n = 0
    with flock(sweep.path / WORKERS / ".reap"):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # a worker removes its lock file only when it exits; while it lives the file is locked
            lock = Path(t.user_attrs.get(WORKER_LOCK, ""))
            if (
                WORKER_LOCK not in t.user_attrs
                or t.user_attrs.get(HOST) != socket.gethostname()
                or (lock.is_file() and RunLock(lock).is_held_elsewhere())
            ):
                continue
            storage = study._storage  # public Optuna has no "fail this trial of another worker"
            try:
                storage.set_trial_user_attr(
                    t._trial_id,
                    DIED,
                    f"its worker {t.user_attrs.get(WORKER)} stopped (killed or interrupted) during the trial",
                )
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            retry_dead(study, study.get_trials(deepcopy=False)[t.number])
            n += 1
    return n


# --- one worker ---


class Pruning(Callback):
    """Reports the objective to Optuna after each epoch; stops the run when the pruner says so
    (the run still finishes properly: checkpoints, validation metrics, report)."""

    def __init__(self, trial: Any, objective: str):
        self.trial, self.objective, self.pruned = trial, objective, False
        self.created = time.perf_counter()
        self.setup_seconds: float | None = None  # the trial's fixed cost: its start to its first batch

    def on_epoch_begin(self, loop: LoopState, epoch: int) -> None:
        if self.setup_seconds is None:
            self.setup_seconds = time.perf_counter() - self.created

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.objective)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        if epoch < loop.epochs and self.trial.should_prune():  # one at its last epoch completes
            self.pruned = True
            raise StopTraining(f"pruned by the sweep after epoch {epoch}")


@contextlib.contextmanager
def _heartbeat(study: Any, trial_id: int) -> Iterator[None]:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage = study._storage
    if not is_heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(HEARTBEAT_S)

    th = threading.Thread(target=beat, daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(5)


def _settle(study: Any, trial: Any, spec: SweepSpec) -> str:
    """run, 'duplicate of N' or 'over budget', decided after every lower-numbered trial settled."""
    from optuna.trial import TrialState

    attrs = study.get_trials(deepcopy=False)[trial.number].user_attrs
    if attrs.get(VERDICT) == "run":  # a queued grid point or retry
        return "run"
    until = time.time() + SETTLE_WAIT_S
    while True:
        trials = study.get_trials(deepcopy=False)
        lower = [t for t in trials if t.number < trial.number and t.state != TrialState.WAITING]
        unsettled = [t for t in lower if t.state == TrialState.RUNNING and VERDICT not in t.user_attrs]
        if not unsettled or time.time() > until:
            break
        time.sleep(0.1)
    mine = trials[trial.number].params
    for t in trials:
        if (
            t.number != trial.number
            and (t.number < trial.number or t.state == TrialState.WAITING)
            and t.user_attrs.get(VERDICT) == "run"
            and not died(t)
            and t.params == mine
        ):
            return f"duplicate of trial {t.number}"
    budget = spec.budget()
    used = sum(1 for t in lower if fresh(t) and (t.user_attrs.get(VERDICT) == "run" or t in unsettled))
    if budget is not None and used >= budget:
        return "over budget"
    return "run"


def work(
    sweep: Sweep, index: int = 0, deadline: float | None = None, progress: bool = False, announce: bool = False
) -> None:
    """Run trials until the budget is used (or the deadline passed); several workers may run this
    at once, on this machine or others."""
    from optuna.trial import TrialState

    probe = sweep.study()
    seed = sweep.spec.seed + 7919 * index + len(probe.get_trials(deepcopy=False))
    study = sweep.study(sampler=sampler_for(sweep.spec, seed), heartbeat=True)
    name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    lock_path = (sweep.path / WORKERS / f"{name}.lock").resolve()
    me = RunLock(lock_path).acquire("run a sweep worker")
    failures: list[str] = []
    repeats = 0
    try:
        while True:
            reap(sweep, study)
            if deadline is not None and time.time() >= deadline:
                log.info("sweep: the time budget is used")
                break
            c = count(study.get_trials(deepcopy=False))
            budget = sweep.spec.budget()
            if not c.waiting and budget is not None and c.used >= budget:
                break
            trial = study.ask()
            trial.set_user_attr(WORKER, name)
            trial.set_user_attr(WORKER_LOCK, str(lock_path))
            trial.set_user_attr(HOST, socket.gethostname())
            params = suggest(trial, sweep.spec)
            verdict = _settle(study, trial, sweep.spec)
            trial.set_user_attr(VERDICT, verdict)
            if verdict != "run":
                log.info("sweep: trial %d skipped (%s)", trial.number, verdict)
                study.tell(trial, state=TrialState.FAIL)
                repeats += 1
                if verdict == "over budget":
                    break
                if repeats >= REPEATS_BEFORE_GIVING_UP:
                    log.warning(
                        "sweep: the last %d proposals all repeated earlier trials; this worker stops "
                        "(the space seems exhausted)",
                        repeats,
                    )
                    break
                continue
            repeats = 0
            state, value, error = _run_trial(sweep, study, trial, params, progress)
            if announce:
                log.info("%s", ProgressLine(sweep, False).text())
            if state == TrialState.FAIL:
                failures.append(error)
                if (
                    len(failures) >= FAILS_BEFORE_GIVING_UP
                    and len(set(failures[-3:])) == 1
                    and not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
                ):
                    raise CnnlabError(f"the sweep stops: its first {len(failures)} trials failed alike: {error}")
    finally:
        me.release()
        lock_path.unlink(missing_ok=True)  # a trial it left running is then seen as orphaned


def _run_trial(
    sweep: Sweep, study: Any, trial: Any, params: dict[str, Any], progress: bool
) -> tuple[Any, float | None, str]:
    """Train one trial's run folder (or CV folder) and tell the study how it went."""
    from optuna.trial import TrialState

    spec = sweep.spec
    run_dir = sweep.path / TRIALS / f"trial-{trial.number:04d}"
    trial.set_user_attr(RUN, str(run_dir.relative_to(sweep.path)))
    log.info("sweep: trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in params.items()))
    started = time.perf_counter()
    pruning = Pruning(trial, spec.objective)  # its clock starts with the trial: config, data, model
    value: float | None = None
    try:
        with _heartbeat(study, trial._trial_id):
            cfg = trial_config(spec, params, out=str(run_dir))
            if spec.cv:
                values: list[float] = []

                def on_fold(n: int, run: RunFolder) -> None:
                    best = best_value(run, spec.objective)
                    if best is not None:
                        values.append(best)
                    trial.report(sum(values) / max(len(values), 1), n)
                    if n < spec.cv.folds * spec.cv.repeats and trial.should_prune():  # type: ignore[union-attr]  # spec.cv is set in this branch
                        raise Pruned()

                try:
                    cv = CvSettings(out=str(run_dir), folds=spec.cv.folds, repeats=spec.cv.repeats)
                    cross_validate(cfg, cv, progress, FoldHooks(on_fold=on_fold))
                except Pruned:
                    pruning.pruned = True
                value = sum(values) / len(values) if values else None
            else:
                res = train(cfg, overwrite=run_dir.exists(), callbacks=[pruning], progress=progress, hold_out_test=True)
                value = res.best_value
                trial.set_user_attr(BEST_EPOCH, res.best_epoch)
    except CnnlabError as e:
        return _tell_failed(study, trial, str(e), started)
    except (KeyboardInterrupt, SystemExit):
        raise  # the trial stays 'running' until --resume finds its worker gone and retries it
    except Exception as e:  # a trial's bug or a diverged model must not stop the other trials
        log.exception("sweep: trial %d failed", trial.number)
        return _tell_failed(study, trial, f"{type(e).__name__}: {e}", started)
    trial.set_user_attr(SECONDS, round(time.perf_counter() - started, 1))
    if pruning.setup_seconds is not None:
        trial.set_user_attr(SETUP_SECONDS, round(pruning.setup_seconds, 3))
    if value is None or not math.isfinite(value):
        return _tell_failed(study, trial, f"{spec.objective} is {value} (the model diverged?)", started)
    if pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        log.info("sweep: trial %d pruned (%s %.4f so far)", trial.number, spec.objective, value)
        return TrialState.PRUNED, value, ""
    study.tell(trial, value)
    log.info("sweep: trial %d: %s = %.4f", trial.number, spec.objective, value)
    return TrialState.COMPLETE, value, ""


def _tell_failed(study: Any, trial: Any, error: str, started: float) -> tuple[Any, None, str]:
    from optuna.trial import TrialState

    error = " ".join(error.split())[:500]
    trial.set_user_attr(ERROR, error)
    trial.set_user_attr(SECONDS, round(time.perf_counter() - started, 1))
    study.tell(trial, state=TrialState.FAIL)
    log.warning("sweep: trial %d failed: %s", trial.number, error)
    return TrialState.FAIL, None, error


def best_value(run: Any, objective: str) -> float | None:
    """The best per-epoch value of ``objective`` in a run's history."""
    vals = [h.get(objective) for h in run.history()]
    vals = [float(v) for v in vals if v not in (None, "") and math.isfinite(float(v))]
    if not vals:
        return None
    return min(vals) if direction(objective) == "min" else max(vals)


# --- the command ---


def run_sweep(settings: SweepSettings, progress: bool = True) -> SweepResult:
    """``cnnlab sweep``: open the sweep, run its workers until the budget is used, write the sweep
    report; returns the sweep folder (default ``sweeps/<spec name>``) and the report's summary."""
    out = Path(settings.out or Path("sweeps") / Path(str(settings.spec)).stem)
    sweep = open_sweep(settings.spec, out, settings.storage, settings.resume)
    announce_board(out)
    deadline = time.time() + sweep.spec.timeout if sweep.spec.timeout else None
    try:
        if settings.workers == 1:
            work(sweep, 0, deadline, progress, announce=True)
        else:
            _run_processes(sweep, settings.workers, deadline, progress)
        reap(sweep, sweep.study())
    finally:
        summary = write_sweep_report(sweep)
    return SweepResult(out, summary)


def _run_processes(sweep: Sweep, workers: int, deadline: float | None, progress: bool) -> None:
    """``workers`` local processes (``python -m cnnlab.workflows.sweep``), each with its share of the cores; a
    live progress line while they run."""
    env = {
        **os.environ,
        "CNNLAB_SWEEP_DEADLINE": str(deadline or ""),
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)),
    }
    if sweep.storage_url:
        env["CNNLAB_SWEEP_STORAGE"] = sweep.storage_url  # not on the command line (ps shows it)
    procs = []
    for i in range(workers):
        logf = open(sweep.path / WORKERS / f"worker-{i}.log", "ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cnnlab.cli.sweep_worker", str(sweep.path), "--index", str(i)],
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        )
        logf.close()
    line = ProgressLine(sweep, progress)
    try:
        while any(p.poll() is None for p in procs):
            line.update()
            time.sleep(1.0)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: each marks its run interrupted
        for p in procs:
            p.wait(60)
        raise
    finally:
        line.close()
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
    for i, rc in bad:
        log.warning("sweep worker %d ended with exit code %d; see %s", i, rc, sweep.path / WORKERS / f"worker-{i}.log")


class ProgressLine:
    """trials done/running/failed/pruned, the best so far and an ETA, redrawn in place."""

    def __init__(self, sweep: Sweep, enabled: bool):
        self.sweep, self.enabled, self.last = sweep, enabled, ""
        self.study = sweep.study()  # reads the journal on from where it last stopped

    def text(self) -> str:
        trials = self.study.get_trials(deepcopy=False)
        c = count(trials)
        spec = self.sweep.spec
        budget = spec.budget()
        o = c.by_outcome
        best = [t for t in trials if t.value is not None and outcome(t, trials) == "complete"]
        pick = min if spec.direction == "minimize" else max
        head = f"sweep {c.done}/{budget if budget is not None else '?'}"
        text = (
            f"{head}: {o.get('complete', 0)} complete, {o.get('pruned', 0)} pruned, {o.get('failed', 0)} failed, "
            f"{c.running} running"
        )
        starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
        if best:  # and when it was reached: the best so far against wall time
            b = pick(best, key=lambda t: t.value)
            at = f", at {(b.datetime_complete.timestamp() - min(starts)) / 60:.1f} min" if starts else ""
            text += f" · best {spec.objective} {b.value:.4f} (trial {b.number}{at})"
        elapsed = time.time() - self.sweep.started
        ends = [t for t in trials if t.datetime_complete]
        if ends and starts and time.time() - min(starts) > 60:  # from the trials' own clocks: a resumed sweep too
            text += f" · {len(ends) / (time.time() - min(starts)) * 3600:.0f} trials/h"
        if spec.timeout:
            text += f" · {max(0, spec.timeout - elapsed) / 60:.1f} min of budget left"
        elif budget and c.done:
            text += f" · ETA {elapsed / c.done * (budget - c.done) / 60:.1f} min"
        return text

    def update(self) -> None:
        text = self.text()
        if text == self.last:
            return
        self.last = text
        if self.enabled and sys.stderr.isatty():
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self.enabled and sys.stderr.isatty() and self.last:
            sys.stderr.write("\n")


def worker_main(path: str, index: int) -> None:
    """``python -m cnnlab.workflows.sweep DIR --index I``: one worker process started by ``cnnlab sweep``."""
    import torch

    storage = os.environ.get("CNNLAB_SWEEP_STORAGE") or None
    deadline = float(os.environ["CNNLAB_SWEEP_DEADLINE"]) if os.environ.get("CNNLAB_SWEEP_DEADLINE") else None
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sweep = open_sweep(None, path, storage, resume=True)
    work(sweep, index, deadline, progress=False)
