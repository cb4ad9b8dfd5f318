"""A sweep folder's state: its spec, its Optuna study and storage, and the settled outcome of each
trial, shared by the runner (which adds trials) and the report (which reads them)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.errors import CnnlabError, DiskError
from cnnlab.core.state import SweepSummary
from cnnlab.core.yamlio import read_yaml_file
from cnnlab.runs.group import RunGroup
from cnnlab.workflows.sweep.spec import SweepSpec, check_spec, encode_point, load_spec, pruner_for

log = logging.getLogger(__name__)

SPEC_FILE, STUDY_FILE, TRIALS, WORKERS = "sweep.yaml", "study.journal", "trials", "workers"
HEARTBEAT_S, GRACE_S = 10, 60  # PostgreSQL: a trial without a heartbeat for a minute is dead
SETTLE_WAIT_S = 60.0
FAILS_BEFORE_GIVING_UP = 3
REPEATS_BEFORE_GIVING_UP = 50  # proposals in a row that repeat earlier trials: the sampler has nothing new

# trial user attributes
WORKER, VERDICT, RETRY_OF, RUN, ERROR, DIED = "worker", "verdict", "retry_of", "run", "error", "died"
BEST_EPOCH, SECONDS, HOST, WORKER_LOCK = "best_epoch", "seconds", "host", "worker_lock"
SETUP_SECONDS = "setup_seconds"  # a trial's start to its first batch (its fixed cost)


class Pruned(Exception):
    """A CV trial stopped after a fold because the pruner judged it clearly worse."""


@dataclass
class Sweep:
    """A sweep folder: its spec, its study name and where the study is stored."""

    path: Path
    spec: SweepSpec
    study_name: str
    storage_url: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def journal(self) -> Path:
        return self.path / STUDY_FILE

    def storage(self, heartbeat: bool = False) -> Any:
        """Optuna's journal file in the sweep folder (never SQLite: it locks under parallel
        writers), or the RDB storage of ``--storage`` (with a heartbeat for the workers)."""
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        if self.storage_url is None:
            path = str(self.journal)
            return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        url = self.storage_url
        if url.startswith("postgresql://"):  # SQLAlchemy's default driver is psycopg2; cnnlab uses psycopg 3
            import importlib.util

            if importlib.util.find_spec("psycopg2") is None:
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        kw: dict[str, Any] = (
            dict(heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, heartbeat_stale_trial_callback=retry_dead)
            if heartbeat
            else {}
        )
        for attempt in range(3):  # two machines creating Optuna's tables at once: one of them retries
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **kw)
            except ImportError as e:
                raise CnnlabError(
                    f"--storage {_masked(url)}: {e}; install psycopg (pip install "
                    "'psycopg[binary]') for postgresql URLs"
                ) from None
            except Exception as e:
                if attempt == 2:
                    raise CnnlabError(
                        f"--storage {_masked(url)} cannot be opened: {' '.join(str(e).split())[:300]}"
                    ) from None
                time.sleep(1 + attempt)

    def study(self, sampler: Any = None, heartbeat: bool = False) -> Any:
        import optuna

        return optuna.load_study(
            study_name=self.study_name, storage=self.storage(heartbeat), sampler=sampler, pruner=pruner_for(self.spec)
        )


def _masked(url: str) -> str:
    """A storage URL without its password, for messages and files."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def open_sweep(
    spec_path: str | Path | None, out: str | Path, storage: str | None = None, resume: bool = False
) -> Sweep:
    """Check the spec and the folder, make (or find) the study; a new grid's points are queued."""
    import optuna

    out = Path(out)
    group = RunGroup(out, "sweep", SPEC_FILE, "cnnlab sweep SPEC")  # its state: sweep.yaml and the study
    group.check_not_a_file()
    saved = out / SPEC_FILE
    if resume:
        if not saved.is_file():
            raise CnnlabError(f"{str(out)!r} is not a sweep folder (no {SPEC_FILE}); start one with cnnlab sweep SPEC")
        tree = read_yaml_file(saved, "sweep state")
        if (
            not isinstance(tree, dict)
            or not isinstance(tree.get("spec"), dict)
            or not isinstance(tree.get("study"), str)
        ):
            raise CnnlabError(f"{saved} is damaged: it must map 'study' to a name and 'spec' to the sweep's spec")
        spec = check_spec(tree["spec"], str(saved))
        if spec_path is not None and load_spec(spec_path).model_dump() != spec.model_dump():
            raise CnnlabError(
                f"{spec_path} differs from the spec the sweep in {str(out)!r} started with; "
                "resume without SPEC, or start a new sweep with another --out"
            )
        sweep = Sweep(out, spec, tree["study"], storage)
        if storage is None and tree.get("storage"):
            raise CnnlabError(f"this sweep keeps its study in {tree['storage']}: pass --storage URL again")
    else:
        if spec_path is None:
            raise CnnlabError("cnnlab sweep needs a SPEC.yaml (or --resume with --out of a sweep folder)")
        spec = load_spec(spec_path)
        group.check_new()
        sweep = Sweep(out, spec, spec.name or out.resolve().name, storage)
        if storage:
            sweep.storage()  # an unreachable database is named before the sweep folder is made
        out.mkdir(parents=True, exist_ok=True)
        tree = {
            "study": sweep.study_name,
            "storage": _masked(storage) if storage else None,
            "spec": spec.model_dump(mode="json", exclude_none=True),
        }
        atomic_write_text(saved, yaml.safe_dump(tree, sort_keys=False))
    if storage is None:
        check_journal(sweep.journal, out / TRIALS)
    (out / WORKERS).mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=sweep.study_name, storage=sweep.storage(), direction=spec.direction, load_if_exists=True
    )
    with flock(out / WORKERS / ".create"):
        mine = spec.model_dump(mode="json")
        theirs = study.user_attrs.get("cnnlab_spec")
        if theirs is None:
            study.set_user_attr("cnnlab_spec", mine)
            for point in spec.start:  # tried first, by whichever worker asks first
                study.enqueue_trial(encode_point(spec, point), user_attrs={VERDICT: "run"}, skip_if_exists=False)
        elif theirs != mine:
            raise CnnlabError(
                f"study {sweep.study_name!r} in {_masked(storage or str(sweep.journal))} was made "
                "from another spec; give the sweep another name"
            )
    return sweep


def check_journal(journal: Path, trials: Path) -> None:
    """Before Optuna reads or appends: a journal whose last record a kill cut short is truncated to
    its last complete record (Optuna would append onto the partial line, and never read the file
    again); a damaged record before the end is refused, naming its byte offset; a missing journal
    beside trial folders is refused (a new study would train them again, over their folders).
    Under Optuna's own journal lock. Hand-written: Optuna checks none of this."""
    from optuna.storages.journal import JournalFileOpenLock

    if not journal.exists():
        made = sorted(p.name for p in trials.iterdir()) if trials.is_dir() else []
        if made:
            raise CnnlabError(
                f"{journal} is missing but {trials} holds {len(made)} trial folder(s): restore the journal "
                "(it records what they were), or start a new sweep with another --out"
            )
        return
    lock = JournalFileOpenLock(str(journal))
    lock.acquire()
    try:
        data = journal.read_bytes()
        *complete, tail = data.split(b"\n")  # tail: what follows the last newline (b"" when none)
        offset, keep = 0, len(data)
        for i, line in enumerate(complete):
            if line.strip() and not _is_json(line):
                if i < len(complete) - 1 or tail.strip():
                    raise CnnlabError(
                        f"{journal} is damaged at byte {offset} (record {i + 1} is not JSON): restore it from a "
                        "copy, or start a new sweep with another --out"
                    )
                keep = offset  # the last record is damaged: drop it
            offset += len(line) + 1
        with open(journal, "r+b") as f:
            if tail.strip() and _is_json(tail):
                f.seek(0, os.SEEK_END)
                f.write(b"\n")  # a whole record whose newline was not written yet
            elif tail or keep < len(data):
                keep = min(keep, len(data) - len(tail))
                log.warning("%s: its last record was cut short (a killed worker); removed %d bytes", journal,
                            len(data) - keep)  # fmt: skip
                f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise DiskError(journal, e) from None
    finally:
        lock.release()


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def fresh(t: Any) -> bool:
    return RETRY_OF not in t.user_attrs


def died(t: Any) -> bool:
    """A failed trial that nobody failed on purpose: its worker died (or its heartbeat stopped)."""
    from optuna.trial import TrialState

    return t.state == TrialState.FAIL and (
        bool(t.user_attrs.get(DIED))
        or not (ERROR in t.user_attrs or VERDICT not in t.user_attrs or t.user_attrs[VERDICT] != "run")
    )


def outcome(t: Any, trials: list[Any]) -> str:
    """What became of a trial's slot: complete, pruned, failed, skipped, running, waiting; a dead
    trial's slot follows its retry."""
    from optuna.trial import TrialState

    if t.user_attrs.get(VERDICT) not in (None, "run"):
        return "skipped"
    if died(t):
        retry = next((r for r in trials if r.user_attrs.get(RETRY_OF) == t.number), None)
        return outcome(retry, trials) if retry is not None else "failed"
    return {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }[t.state]


@dataclass
class Counts:
    used: int = 0  # slots taken by fresh trials that run (or will)
    waiting: int = 0
    done: int = 0
    running: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


def count(trials: list[Any]) -> Counts:
    from optuna.trial import TrialState

    c = Counts()
    for t in trials:
        if t.state == TrialState.WAITING:
            c.waiting += 1
        if t.state == TrialState.RUNNING:
            c.running += 1
        if fresh(t) and t.user_attrs.get(VERDICT, "run" if t.state == TrialState.RUNNING else None) == "run":
            c.used += 1
            o = outcome(t, trials)
            c.by_outcome[o] = c.by_outcome.get(o, 0) + 1
            c.done += o in ("complete", "pruned", "failed")
    return c


def retry_dead(study: Any, trial: Any) -> None:
    """Queue a dead trial's values once more (never a retry of a retry)."""
    if trial.user_attrs.get(VERDICT) != "run" or RETRY_OF in trial.user_attrs:
        return
    if any(t.user_attrs.get(RETRY_OF) == trial.number for t in study.get_trials(deepcopy=False)):
        return
    log.warning("sweep: trial %d lost its worker; its values are queued once more", trial.number)
    study.enqueue_trial(trial.params, user_attrs={VERDICT: "run", RETRY_OF: trial.number}, skip_if_exists=False)


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` returns: the sweep folder and its report's summary (sweep.json)."""

    out: Path
    summary: SweepSummary  # sweep.json as written

    @property
    def study(self) -> str:
        return self.summary.study

    @property
    def objective(self) -> str:
        return self.summary.objective

    @property
    def budget(self) -> int | None:
        return self.summary.budget

    @property
    def done(self) -> int:
        return self.summary.done

    @property
    def outcomes(self) -> dict[str, int]:
        return self.summary.outcomes

    @property
    def best(self) -> dict[str, Any] | None:
        return self.summary.best

    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.summary.trials
