"""`cnnlab compare`: run folders side by side on one page, two cross-validations fold by fold, or
two seed groups (``train --seeds N``) image by image with their seed spread."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from cnnlab.core.errors import CnnlabError
from cnnlab.evaluate.stats import seeded_paired_test
from cnnlab.reports.kit import Section
from cnnlab.reports.run import agreement_section
from cnnlab.runs.data import load_run_data
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.paired import paired_runs
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.cv import paired_comparison, read_cv
from cnnlab.workflows.cv.folds import FoldComparison
from cnnlab.workflows.evaluation import compare
from cnnlab.workflows.seeds import SeedGroup, correct_matrix, read_seeds, seed_runs

__all__ = ["Comparison", "RunsComparison", "SeedGroupsComparison", "compare_results"]

log = logging.getLogger(__name__)


class RunsComparison(BaseModel):
    """Run folders compared: the page, and for two single-label runs on the same test images their
    paired tests (``paired``) and image-by-image agreement, or why they are not paired (``unpaired``)."""

    kind: Literal["runs"] = "runs"
    page: str
    paired: dict[str, Any] | None = None
    agreement: dict[str, Any] | None = None
    unpaired: str | None = None


class SeedGroupsComparison(BaseModel):
    """Two seed groups: each metric's mean ± sd per group and the gap B − A, and (same test images,
    single-label) the seeded paired test of the accuracy gap, or why there is none (``unpaired``)."""

    kind: Literal["seeds"] = "seeds"
    a: str
    b: str
    metrics: dict[str, dict[str, Any]]
    paired: dict[str, Any] | None = None
    unpaired: str | None = None


Comparison = RunsComparison | SeedGroupsComparison | FoldComparison


def compare_results(
    paths: Sequence[str | Path], out: str | Path = "compare.html", metric: str = "accuracy"
) -> Comparison:
    """Two CV folders → their paired comparison on ``metric`` (``kind: "cv"``); two seed groups →
    their gap beside their seed spread, tested image by image (``kind: "seeds"``); run folders → the
    comparison page written to ``out`` (``kind: "runs"``, ``page``)."""
    groups = [read_seeds(p) for p in paths]
    if any(groups):
        ga, gb = groups if len(groups) == 2 else (None, None)
        if ga is None or gb is None:
            raise CnnlabError("compare takes run folders, or exactly two seed groups (from cnnlab train --seeds N)")
        return paired_seed_groups(ga, gb)
    cvs = [read_cv(p) for p in paths]
    if any(cvs):
        ca, cb = cvs if len(cvs) == 2 else (None, None)
        if ca is None or cb is None:
            raise CnnlabError("compare takes run folders, or exactly two cross-validation folders (from cnnlab cv)")
        return paired_comparison(ca, cb, metric)
    paired = paired_runs(paths)  # a damaged run is refused before the page is written
    extra = [_agreement_page(paths[0], paired["agreement"])] if paired.get("agreement") else []
    return RunsComparison(page=str(compare(paths, out, extra)), **paired)


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


def paired_seed_groups(ga: SeedGroup, gb: SeedGroup) -> SeedGroupsComparison:
    """Two finished seed groups: each metric's mean ± sd over seeds and the gap B − A; on the test
    images both share, the seeded paired test of the accuracy gap (the seed spread in its variance)."""
    a, b = ga.state, gb.state
    sa, sb = a.summary or {}, b.summary or {}
    out = SeedGroupsComparison(
        a=str(ga.out),
        b=str(gb.out),
        metrics={
            k: {"a": sa[k].model_dump(), "b": sb[k].model_dump(), "gap": sb[k].mean - sa[k].mean} for k in sa if k in sb
        },  # fmt: skip
    )
    if a.test_split != b.test_split:
        out.unpaired = (
            f"the groups were tested on different images (test split {a.test_split} vs {b.test_split}): "
            "their figures are side by side, not paired; train both with the same data.split_seed"
        )
        return out
    ca, cb = correct_matrix(seed_runs(ga.out, a.seeds)), correct_matrix(seed_runs(gb.out, b.seeds))
    if ca is None or cb is None or not np.array_equal(ca[0], cb[0]):
        out.unpaired = "paired tests here are for single-label groups whose seeds all finished with predictions"
        return out
    out.paired = {"test_split": a.test_split, "test_set_note": use_sentence(str(a.test_split)),
                  **seeded_paired_test(ca[1], cb[1])}  # fmt: skip
    return out
