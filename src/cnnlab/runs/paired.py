"""Two finished runs scored on the same test images, compared image by image: the paired tests and
the agreement (both read only the runs' saved predictions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.evaluate.stats import agreement, compare_predictions
from cnnlab.runs.ledger import use_sentence
from cnnlab.runs.store import RunFolder

__all__ = ["paired_runs"]


def paired_runs(paths: Sequence[str | Path], seed: int = 0) -> dict[str, Any]:
    """For two finished single-label runs: their paired comparison on the test images they share
    (``paired``), or why they are not paired (``unpaired``: other test images, or not comparable)."""
    if len(paths) != 2:
        return {}
    a, b = (RunFolder(p).require(checkpoint=False) for p in paths)
    if not all(r.metrics_json.is_file() and r.predictions_npz.is_file() for r in (a, b)):
        return {"unpaired": "both runs must have finished (metrics.json, predictions.npz) to be paired"}
    ida, idb = a.test_split_id(), b.test_split_id()
    if ida != idb:
        return {
            "unpaired": f"the runs were tested on different images (test split {ida} vs {idb}): their "
            "accuracies are side by side, not paired; train both with the same data.split_seed"
        }
    pa, pb = a.load_predictions(), b.load_predictions()
    if pa["labels"].ndim != 1:
        return {"unpaired": "paired tests here are for single-label runs (these are multi-label)"}
    order_a, order_b = np.argsort(pa["indices"]), np.argsort(pb["indices"])
    y = pa["labels"][order_a]
    probs_a, probs_b = pa["probs"][order_a], pb["probs"][order_b]
    paired = compare_predictions(y, probs_a, probs_b, seed)
    agree = agreement(y, probs_a, probs_b)
    index = pa["indices"][order_a]  # positions → the images' indices in the data set
    agree["only_a"], agree["only_b"] = ([int(index[j]) for j in agree[k]] for k in ("only_a", "only_b"))
    agree["ensemble"] = "the average of the two runs' saved test probabilities (predictions.npz)"
    return {
        "paired": {"a": str(a.path), "b": str(b.path), "test_split": ida, "test_set_note": use_sentence(ida), **paired},
        "agreement": agree,
    }
