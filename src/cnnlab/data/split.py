"""Seeded, stratified train/val/test splits."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split indices of ``labels`` into parts with the given fractions, class by class.

    Written by hand because scikit-learn's stratified splitters refuse classes with fewer
    members than parts; here each class is shuffled with ``seed`` and cut by rounding its
    share of every part after the first, the first part (train) taking the remainder.

    Returns:
        One sorted index array per fraction.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        counts = [int(round(len(idx) * f)) for f in fractions[1:]]
        while sum(counts) >= len(idx) and any(counts):  # keep at least one for the first part
            counts[int(np.argmax(counts))] -= 1
        start = len(idx) - sum(counts)
        parts[0].append(idx[:start])
        for k, n in enumerate(counts, start=1):
            parts[k].append(idx[start:start + n])
            start += n
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def make_splits(
    labels: np.ndarray,
    given: dict[str, np.ndarray],
    split: tuple[float, float, float],
    val_size: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Train/val/test indices: the source's own splits where it has them, else seeded ones.

    Args:
        labels: class index per image.
        given: splits the source defines (a pre-split folder, a benchmark's train/test).
        split: train/val/test fractions for sources without splits.
        val_size: when the source gives train but no val: a fraction (<1) or count of train.
        seed: the run's seed.
    """
    if not given:
        train, val, test = stratified_split(labels, split, seed)
        return {"train": train, "val": val, "test": test}
    out = {k: np.asarray(v, dtype=np.int64) for k, v in given.items()}
    if "val" not in out:
        train = out["train"]
        frac = val_size if val_size < 1 else min(val_size / max(len(train), 1), 1.0)
        keep, val = stratified_split(labels[train], (1 - frac, frac), seed)
        out["train"], out["val"] = train[keep], train[val]
    out.setdefault("test", np.zeros(0, np.int64))
    return {k: out[k] for k in ("train", "val", "test")}
