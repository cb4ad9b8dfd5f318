"""`--seeds N`: one recipe trained from N initialisations on one split (``train.seed``, +1, +2 …;
``data.split_seed`` unchanged, so every seed is scored on the same test images). A seed group is a
folder of ordinary run folders (``seed-<s>``) with its state in seeds.json: the config, the seeds,
and when finished the mean ± sd of every test metric, the spread a model gap must exceed to mean
anything. Training the group lives in ``workflows.training`` (``train(cfg, seeds=N)``); this module
plans it, reads it back and writes its page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.metrics import headline
from cnnlab.core.schema import Config
from cnnlab.reports.groups import seeds_page
from cnnlab.runs.group import RunGroup
from cnnlab.runs.store import RunFolder

__all__ = [
    "correct_matrix",
    "read_seeds",
    "seed_config",
    "seed_group",
    "seed_list",
    "seed_runs",
    "spread",
    "summarise",
    "write_page",
]

MAX_SEED = 2**32 - 1


def seed_group(out: str | Path) -> RunGroup:
    """The seed-group folder ``out``: a run folder per seed, its state in seeds.json."""
    return RunGroup(out, "seeds", "seeds.json", "cnnlab train --seeds N --out DIR")


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


def summarise(out: str | Path, seeds: Sequence[int]) -> dict[str, Any]:
    """What the finished seeds of a group scored: one row per seed, the spread of each test metric,
    and the test split they share (refused if they do not: then they were not one experiment)."""
    rows, splits = [], set()
    for s, run in zip(seeds, seed_runs(out, seeds)):
        m = run.read_json(run.metrics_json)
        rows.append(
            {
                "seed": s,
                "run": run.path.name,
                "best_epoch": m.get("best_epoch"),
                "metrics": {k: m[k] for k in headline() if m.get(k) is not None},
            }
        )
        splits.add(run.test_split_id())
    if len(splits) > 1:
        raise CnnlabError(
            f"the seeds in {str(out)!r} were tested on different images ({', '.join(sorted(splits))}): "
            "a seed group shares one data.split_seed; start it again with --overwrite"
        )
    keys = [k for k in headline() if all(k in r["metrics"] for r in rows)]
    return {
        "runs": rows,
        "summary": {k: spread([r["metrics"][k] for r in rows]) for k in keys},
        "test_split": splits.pop() if splits else None,
        "images": m.get("num_samples") if rows else None,
    }


def read_seeds(path: str | Path) -> dict[str, Any] | None:
    """The seeds.json of a finished seed group, or None when ``path`` is not one.

    Raises:
        CnnlabError: a group whose seeds have not all finished, or a damaged seeds.json.
    """
    group = seed_group(path)
    if not group.has_state():
        return None
    state = group.read()
    if state.get("status") != "completed" or "summary" not in state:
        raise CnnlabError(f"the seed group {str(path)!r} has not finished; finish it with cnnlab train --resume {path}")
    return {**state, "out_dir": str(path)}


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


def write_page(out: str | Path, state: dict[str, Any]) -> Path:
    """seeds.html: the spread of each metric and every seed's figures."""
    path = Path(out) / "seeds.html"
    atomic_write_text(path, seeds_page(state))
    return path
