"""`--seeds N`: one recipe trained from N initialisations on one split (``train.seed``, +1, +2 …;
``data.split_seed`` unchanged, so every seed is scored on the same test images). A seed group is a
folder of ordinary run folders (``seed-<s>``) with its state in seeds.json: the config, the seeds,
and when finished the mean ± sd of every test metric, the spread a model gap must exceed to mean
anything. Training the group lives in ``workflows.seeded`` (``train_seeds``); this module plans it, reads
it back (typed and checked: :class:`SeedsState`) and writes its page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.metrics import headline
from cnnlab.core.schema import Config, build_config, flatten_config
from cnnlab.core.state import MAX_SEED, SeedRow, SeedsState, Spread
from cnnlab.reports.groups import seeds_page
from cnnlab.runs.group import RunGroup, group_at
from cnnlab.runs.store import RunFolder

__all__ = [
    "SeedGroup",
    "check_one_recipe",
    "correct_matrix",
    "group_config",
    "read_group",
    "read_seeds",
    "seed_config",
    "seed_group",
    "seed_list",
    "seed_runs",
    "spread",
    "summarise",
    "write_page",
]


def seed_group(out: str | Path) -> RunGroup:
    """The seed-group folder ``out``: a run folder per seed, its state in seeds.json."""
    return group_at("seeds", out)


def read_group(group: RunGroup) -> SeedsState:
    """The group's seeds.json, checked: a damaged or tampered file is one line naming the field.

    Raises:
        CnnlabError: a missing, damaged, foreign or newer seeds.json, or one whose config is invalid.
    """
    state = group.load(SeedsState)
    build_config(state.config, {}, source=str(group.state_path))  # an invalid config is one line too
    return state


def group_config(group: RunGroup, state: SeedsState, epochs: int | None = None) -> Config:
    """The config every seed of the group trains from (``epochs``: a new total): the one given, whose
    unset fields a seed resolves as a new run does, so an interrupted seed gets its siblings' recipe;
    for a group saved before cnnlab kept what was given, the resolved config of its first seed that
    has one, else the saved config."""
    extra = {"train.epochs": epochs} if epochs else {}
    if state.given is not None:
        return build_config(state.given, extra, source=str(group.state_path))
    for run in seed_runs(group.path, state.seeds):
        if run.config.is_file():
            return build_config(run.read_config().model_dump(mode="json"), extra, source=str(run.config))
    return build_config(state.config, extra, source=str(group.state_path))


def check_one_recipe(out: str | Path, seeds: Sequence[int]) -> None:
    """Every seed of a group trained the same config but for its seed and folder.

    Raises:
        CnnlabError: naming the first field in which two seeds differ.
    """
    runs = [r for r in seed_runs(out, seeds) if r.config.is_file()]
    first = None
    for run in runs:
        flat = {k: v for k, v in flatten_config(run.read_config().model_dump(mode="json")).items()
                if k not in ("train.seed", "run.out")}  # fmt: skip
        if first is None:
            first = (run, flat)
            continue
        for key in sorted(set(flat) | set(first[1])):
            if flat.get(key) != first[1].get(key):
                raise CnnlabError(
                    f"the seeds of {str(out)!r} trained different recipes: {key} is {first[1].get(key)!r} in "
                    f"{first[0].path.name} and {flat.get(key)!r} in {run.path.name}; a seed group trains one "
                    "recipe: start it again with --overwrite"
                )


def seed_list(base: int, n: int) -> list[int]:
    """The N seeds of a group: ``base``, ``base + 1`` …"""
    if n < 1:
        raise CnnlabError(f"--seeds {n}: give at least 1")
    if base + n - 1 > MAX_SEED:
        raise CnnlabError(f"--seed {base} with --seeds {n} passes the largest seed {MAX_SEED}; start lower")
    return [base + i for i in range(n)]


def seed_config(cfg: Config, seed: int, out: str | Path) -> Config:
    """``cfg`` with ``train.seed`` = ``seed``, writing to ``out``."""
    return cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"seed": seed}),
            "run": cfg.run.model_copy(update={"out": str(out)}),
        }
    )


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, standard deviation over the seeds (ddof 1; 0 for one seed), min, max and the values."""
    v = np.asarray(values, float)
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "values": v.tolist(),
    }


def seed_runs(out: str | Path, seeds: Sequence[int]) -> list[RunFolder]:
    return [RunFolder(Path(out) / f"seed-{s}") for s in seeds]


def summarise(state: SeedsState, out: str | Path) -> None:
    """What the finished seeds of a group scored: one row per seed, the spread of each test metric,
    and the test split they share (refused if they do not: then they were not one experiment)."""
    rows, splits = [], set()
    for s, run in zip(state.seeds, seed_runs(out, state.seeds)):
        m = run.read_json(run.metrics_json)
        rows.append(SeedRow(seed=s, run=run.path.name, best_epoch=m.get("best_epoch"),
                            metrics={k: m[k] for k in headline() if m.get(k) is not None}))  # fmt: skip
        splits.add(run.test_split_id())
    if len(splits) > 1:
        raise CnnlabError(
            f"the seeds in {str(out)!r} were tested on different images ({', '.join(sorted(splits))}): "
            "a seed group shares one data.split_seed; start it again with --overwrite"
        )
    keys = [k for k in headline() if all(k in r.metrics for r in rows)]
    state.runs = rows
    state.summary = {k: Spread(**spread([r.metrics[k] for r in rows])) for k in keys}
    state.test_split = splits.pop() if splits else None
    state.images = m.get("num_samples") if rows else None


@dataclass(frozen=True)
class SeedGroup:
    """A finished seed group: its folder and its state (seeds.json)."""

    out: Path
    state: SeedsState


def read_seeds(path: str | Path) -> SeedGroup | None:
    """The seeds.json of a finished seed group, or None when ``path`` is not one.

    Raises:
        CnnlabError: a group whose seeds have not all finished, or a damaged seeds.json.
    """
    group = seed_group(path)
    if not group.has_state():
        return None
    state = read_group(group)
    if state.status != "completed" or state.summary is None:
        raise CnnlabError(f"the seed group {str(path)!r} has not finished; finish it with cnnlab train --resume {path}")
    return SeedGroup(Path(path), state)


def correct_matrix(runs: Sequence[RunFolder]) -> tuple[np.ndarray, np.ndarray] | None:
    """The test images the runs share (sorted indices) and, per run, which of them it got right
    (runs × images); None for multi-label runs or runs without predictions."""
    preds = []
    for run in runs:
        if not run.predictions_npz.is_file():
            return None
        p = run.load_predictions()
        if p["labels"].ndim != 1:
            return None
        order = np.argsort(p["indices"])
        preds.append((p["indices"][order], p["probs"][order].argmax(1) == p["labels"][order]))
    if not preds or any(not np.array_equal(preds[0][0], i) for i, _ in preds):
        return None
    return preds[0][0], np.stack([c for _, c in preds])


def write_page(out: str | Path, state: SeedsState) -> Path:
    """seeds.html: the spread of each metric and every seed's figures."""
    path = Path(out) / "seeds.html"
    atomic_write_text(path, seeds_page(state))
    return path
