"""`cnnlab compare`: run folders side by side on one page, two cross-validations fold by fold, or
two seed groups (``train --seeds N``) image by image with their seed spread."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.evaluate.stats import seeded_paired_test
from cnnlab.reports.kit import Section
from cnnlab.reports.run import agreement_section
from cnnlab.runs.data import load_run_data
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.paired import paired_runs
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.cv import paired_comparison, read_cv
from cnnlab.workflows.evaluation import compare
from cnnlab.workflows.seeds import correct_matrix, read_seeds, seed_runs

__all__ = ["compare_results"]

log = logging.getLogger(__name__)


def compare_results(
    paths: Sequence[str | Path], out: str | Path = "compare.html", metric: str = "accuracy"
) -> dict[str, Any]:
    """Two CV folders → their paired comparison on ``metric`` (``kind: "cv"``); two seed groups →
    their gap beside their seed spread, tested image by image (``kind: "seeds"``); run folders → the
    comparison page written to ``out`` (``kind: "runs"``, ``page``)."""
    groups = [read_seeds(p) for p in paths]
    if any(groups):
        a, b = groups if len(groups) == 2 else (None, None)
        if a is None or b is None:
            raise CnnlabError("compare takes run folders, or exactly two seed groups (from cnnlab train --seeds N)")
        return {"kind": "seeds", **paired_seed_groups(a, b)}
    cvs = [read_cv(p) for p in paths]
    if any(cvs):
        a, b = cvs if len(cvs) == 2 else (None, None)
        if a is None or b is None:
            raise CnnlabError("compare takes run folders, or exactly two cross-validation folders (from cnnlab cv)")
        return {"kind": "cv", **paired_comparison(a, b, metric)}
    paired = paired_runs(paths)  # a damaged run is refused before the page is written
    extra = [_agreement_page(paths[0], paired["agreement"])] if paired.get("agreement") else []
    return {"kind": "runs", "page": str(compare(paths, out, extra)), **paired}


def _agreement_page(path: str | Path, agree: dict[str, Any]) -> Section:
    """The page's image-by-image section, its thumbnails from run A's own data (its saved split);
    without them when that data is not at hand any more."""
    run = RunFolder(path)
    try:
        data = load_run_data(run, run.read_config(), progress=False, leaks=False)
    except CnnlabError as e:
        log.warning("the compare page shows no thumbnails: %s", e)
        return agreement_section(agree, None, [], None)
    return agreement_section(agree, data.images, data.classes, data.labels.numpy())


def paired_seed_groups(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two finished seed groups: each metric's mean ± sd over seeds and the gap B − A; on the test
    images both share, the seeded paired test of the accuracy gap (the seed spread in its variance)."""
    metrics = [k for k in a["summary"] if k in b["summary"]]
    out: dict[str, Any] = {
        "a": a["out_dir"],
        "b": b["out_dir"],
        "metrics": {
            k: {"a": a["summary"][k], "b": b["summary"][k], "gap": b["summary"][k]["mean"] - a["summary"][k]["mean"]}
            for k in metrics
        },
    }
    if a["test_split"] != b["test_split"]:
        out["unpaired"] = (
            f"the groups were tested on different images (test split {a['test_split']} vs {b['test_split']}): "
            "their figures are side by side, not paired; train both with the same data.split_seed"
        )
        return out
    ca = correct_matrix(seed_runs(a["out_dir"], a["seeds"]))
    cb = correct_matrix(seed_runs(b["out_dir"], b["seeds"]))
    if ca is None or cb is None or not np.array_equal(ca[0], cb[0]):
        out["unpaired"] = "paired tests here are for single-label groups whose seeds all finished with predictions"
        return out
    out["paired"] = {"test_split": a["test_split"], "test_set_note": use_sentence(a["test_split"]),
                     **seeded_paired_test(ca[1], cb[1])}  # fmt: skip
    return out
