"""Training a seed group (`train --seeds N`): one recipe trained from N initialisations on one split,
beside the plain run of ``workflows.training`` (which knows nothing of groups) and the folds of ``cv``.
``train`` is the public door of both: a seed group when asked for one, else a plain run."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cnnlab.core.errors import CnnlabError
from cnnlab.core.schema import Config
from cnnlab.core.state import SeedsState
from cnnlab.runs.group import RunGroup
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.store import RunFolder, now
from cnnlab.train import distributed
from cnnlab.train.callbacks import Callback
from cnnlab.workflows.seeds import (
    check_one_recipe,
    group_config,
    read_group,
    seed_config,
    seed_group,
    seed_list,
    seed_runs,
    summarise,
    write_page,
)
from cnnlab.workflows.training import TrainResult, train_or_resume
from cnnlab.workflows.training import train as train_run

__all__ = ["TrainPlan", "train", "train_seeds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPlan:
    """How `cnnlab train` trains: how many seeds (a seed group when more than one), or the run or group
    to finish (``resume``); a new total of epochs; whether an existing folder may be replaced."""

    seeds: int = 1
    resume: str | Path | None = None
    epochs: int | None = None
    overwrite: bool = False


def train(
    cfg: Config | None, plan: TrainPlan | None = None, callbacks: Sequence[Callback] = (), progress: bool = True
) -> TrainResult:
    """`cnnlab train`: ``cfg`` trained as one run, or as a seed group when ``plan.seeds`` > 1 or
    ``plan.resume`` is one (:func:`train_seeds`); with ``plan.resume`` (and ``cfg`` None) the run or group
    there finished."""
    plan = plan or TrainPlan()
    if plan.seeds > 1 or (plan.resume is not None and seed_group(plan.resume).has_state()):
        return train_seeds(cfg, plan, callbacks, progress)
    return train_run(cfg, resume=plan.resume, epochs=plan.epochs, overwrite=plan.overwrite, callbacks=callbacks,
                     progress=progress)  # fmt: skip


def train_seeds(
    cfg: Config | None, plan: TrainPlan, callbacks: Sequence[Callback] = (), progress: bool = True
) -> TrainResult:
    """A seed group: ``cfg`` trained from ``plan.seeds`` initialisations (``train.seed``, +1 …) on one
    split, each an ordinary run folder ``seed-<s>`` inside ``cfg.run.out``, summarised in seeds.json and
    seeds.html; or, with ``plan.resume``, the group there finished (every seed trained, resumed, or kept
    when finished). Every seed trains the group's one recipe; seeds that differ are refused.

    Raises:
        CnnlabError: bad input or a damaged seeds.json, before any training; seeds of two recipes.
        KeyboardInterrupt: with the group saved as it stands (resume it later).
    """
    n, resume, epochs = plan.seeds, plan.resume, plan.epochs
    if distributed.world_size() > 1:
        raise CnnlabError(
            "--seeds trains its seeds one after another; run it without torchrun (or one torchrun per seed)"
        )
    if resume is not None:
        group = seed_group(resume)
        saved = read_group(group)
        if n > 1 and n != len(saved.seeds):
            raise CnnlabError(f"{group.state_path} holds {len(saved.seeds)} seeds, not --seeds {n}")
        cfg, seeds = group_config(group, saved, epochs), saved.seeds
    else:
        if cfg is None:
            raise CnnlabError("train needs a config, or a seed group to resume")
        out = cfg.run.out or f"runs/{cfg.model.name}-{Path(cfg.data.source).name}-seeds-{datetime.now():%Y%m%d-%H%M%S}"
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": out})})
        group, seeds = seed_group(out), seed_list(cfg.train.seed, n)
        _clear(group, plan.overwrite)
    state = SeedsState(started=now(), seeds=seeds, config=cfg.model_dump(mode="json"),
                       given=cfg.model_dump(mode="json", exclude_unset=True))  # fmt: skip
    group.save(state)
    for i, (s, run) in enumerate(zip(seeds, seed_runs(group.path, seeds)), 1):
        log.info("seeds: seed %d (%d of %d)", s, i, len(seeds))
        seed_cfg = seed_config(cfg, s, run.path)
        if epochs and run.last_ckpt.is_file() and run.read_config().train.epochs < epochs:
            train_run(None, resume=run.path, epochs=epochs, callbacks=callbacks, progress=progress)
        else:
            train_or_resume(seed_cfg, callbacks=callbacks, progress=progress)
    check_one_recipe(group.path, seeds)
    summarise(state, group.path)
    state.status, state.finished = "completed", now()
    group.save(state)
    write_page(group.path, state)
    means = {k: v.mean for k, v in (state.summary or {}).items()}
    note = use_sentence(state.test_split) if state.test_split else None
    return TrainResult(group.path, [], {**means, "split": "test", "num_samples": state.images},
                       f"{len(seeds)} seeds", cfg.train.monitor, test_set_note=note, seeds=state)  # fmt: skip


def _clear(group: RunGroup, overwrite: bool) -> None:
    """A new group's folder: empty, or (with ``overwrite``) a seed group replaced as a whole, and only
    when it holds nothing a seed group does not write and no process holds a seed."""
    if overwrite and group.has_state():
        try:
            runs = seed_runs(group.path, read_group(group).seeds)
        except CnnlabError:  # a damaged seeds.json, being replaced: the seed folders it holds
            runs = [RunFolder(p) for p in sorted(group.path.glob("seed-*")) if p.is_dir()]
        foreign = sorted(
            {p.name for p in group.path.iterdir()} - {"seeds.json", "seeds.html"} - {r.path.name for r in runs}
        )
        if foreign:
            raise CnnlabError(
                f"--overwrite refuses to delete {str(group.path)!r}: it holds {', '.join(map(repr, foreign[:3]))}, "
                "which no seed group writes; move it first"
            )
        for run in runs:
            if run.path.exists():
                run.check_new(overwrite=True)
        shutil.rmtree(group.path)
    group.check_new()
