"""The study's first look at its candidates and data: each candidate's timed probe, within a tenth of
the budget, and the split's facts (its sizes, its smallest class, and whether the data is too small
for a held-out test split)."""

from __future__ import annotations

import logging
import time

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.data.pipeline import PreparedData
from cnnlab.models.factory import get_spec
from cnnlab.train.threads import free_core_threads
from cnnlab.workflows.study.plan import probe, shrink_to_fit
from cnnlab.workflows.study.state import Study

__all__ = ["PROBE_SHARE", "SMALL_TEST", "probe_all", "split_facts"]

log = logging.getLogger(__name__)

PROBE_SHARE = 0.1  # the probes' part of the budget at most: the candidates not probed by then are left out
SMALL_TEST = 100  # a test split of fewer images gives intervals too wide to rank by: cross-validate all


def probe_all(study: Study, shape: tuple[int, int, int, int], share: float, t0: float) -> None:
    """Time every candidate (``shape``: channels, size, classes, batch) within the probes' tenth of the
    budget, cheapest first, each net at a size and batch once; a pretrained net whose full recipe would
    take more than ``share`` at its size is shrunk. A candidate not probed in time is left out."""

    probes_start = time.time()
    probes_end = (
        probes_start + PROBE_SHARE * study.state.budget_seconds
    )  # the probes' own bound, cheap candidates first
    with free_core_threads():  # timed under the threads training will have beside what else runs
        timed: dict[tuple[str, int | None, int | None], tuple[float, float]] = {}  # a net, size, batch: once
        order = sorted(study.cands, key=lambda c: (bool(get_spec(c.model).pretrained), c.mode != "scratch",
                                                   c.mode == "frozen"))  # fmt: skip
        for c in order:
            key = (c.model, c.input_size, c.batch_size)
            # a pretrained net's probe (building it, its first cold steps) takes seconds (3-5 s for
            # EfficientNet-Lite0 on 2 cores): it starts only with two thirds of the probes' time left, so a
            # short budget or a busy machine keeps the cheap candidates and the probes their tenth
            need = PROBE_SHARE * study.state.budget_seconds * 2 / 3 if get_spec(c.model).pretrained else 0.0
            if key not in timed and time.time() + need >= probes_end:
                c.status, c.why = "dropped", f"not probed: the probes' {PROBE_SHARE:.0%} of the budget ran out"
                log.warning("study: %s left out: %s", c.name, c.why)
                continue
            try:
                if key in timed:  # frozen after fine-tune: the same net's inference, already timed
                    c.eval_s, c.train_s = timed[key][0], 0.0 if c.mode == "frozen" else timed[key][1]
                else:
                    probe(c, *shape, min(1.5, max(0.1, (probes_end - time.time()) / 4)),
                          probes_end)  # fmt: skip
                    timed[key] = (c.eval_s, c.train_s)
                if get_spec(c.model).pretrained and shrink_to_fit(c, share - (time.time() - t0), study.state.sizes):
                    log.info("study: %s at its native size costs more than its share: %d px instead", c.name,
                             c.input_size)  # fmt: skip
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
    study.state.probe_seconds = round(time.time() - probes_start, 1)


def split_facts(prepared: PreparedData, fixed: bool) -> tuple[dict[str, int], int, bool]:
    """The split's sizes, the smallest class outside the test split (or, small data, at all), and
    whether the data is small: a test split under ``SMALL_TEST`` images, which the study then
    cross-validates over every image (not when the split is ``fixed``: pre-split, curves, folds or
    seeds asked for; never multi-label).

    Raises:
        CnnlabError: a split without images in train, val or test."""
    sizes = {k: int(len(v)) for k, v in prepared.splits.items()}
    if min(sizes.get("train", 0), sizes.get("val", 0), sizes.get("test", 0)) == 0:
        raise CnnlabError(f"{prepared.source}: the split has {sizes}; a study needs images in train, val and test")
    small = not (fixed or prepared.multilabel) and sizes["test"] < SMALL_TEST
    pool = (
        np.arange(len(prepared.labels)) if small else np.concatenate([prepared.splits["train"], prepared.splits["val"]])
    )
    y = prepared.labels.numpy()[pool]
    smallest = int((y.sum(0) if prepared.multilabel else np.bincount(y, minlength=len(prepared.classes))).min())
    return sizes, smallest, small
