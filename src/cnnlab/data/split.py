"""Seeded, stratified train/val/test splits and k-fold indices, single- and multi-label."""

from __future__ import annotations

import numpy as np


def _multilabel_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Iterative stratification (Sechidis et al. 2011, via the iterative-stratification
    package), cutting off one part at a time from what remains."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    remaining = np.arange(len(labels))
    parts: list[np.ndarray] = [np.zeros(0, np.int64) for _ in fractions]
    left = 1.0
    for k in range(len(fractions) - 1, 0, -1):
        share = fractions[k] / left if left > 0 else 0.0
        n_take = int(round(share * len(remaining)))
        if n_take == 0 or n_take >= len(remaining):
            left -= fractions[k]
            continue
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_take, random_state=seed + k)
        rest, take = next(splitter.split(np.zeros(len(remaining)), labels[remaining]))
        parts[k] = np.sort(remaining[take])
        remaining = remaining[rest]
        left -= fractions[k]
    parts[0] = np.sort(remaining)
    return parts


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split indices of ``labels`` into parts with the given fractions, keeping class shares.

    Single-label: written by hand because scikit-learn's stratified splitters refuse classes
    with fewer members than parts; each class is shuffled with ``seed`` and cut by rounding
    its share of every part after the first, the first part (train) taking the remainder.
    Multi-label ((N, K) multi-hot): iterative stratification.

    Returns:
        One sorted index array per fraction.
    """
    if labels.ndim == 2:
        return _multilabel_split(labels, fractions, seed)
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
            parts[k].append(idx[start : start + n])
            start += n
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def given_splits(split_of: list) -> dict[str, np.ndarray]:
    """Indices per split from a per-image split name (None: not given), e.g. a pre-split folder."""
    names = np.asarray(split_of, dtype=object)
    return {
        name: np.flatnonzero(names == name).astype(np.int64)
        for name in ("train", "val", "test")
        if (names == name).any()
    }


def imbalance_ratio(counts: np.ndarray) -> float | None:
    """Largest over smallest non-empty class count; None when no class has images."""
    counts = np.asarray(counts)
    nonzero = counts[counts > 0]
    return round(float(nonzero.max() / nonzero.min()), 4) if len(nonzero) else None


def make_splits(
    labels: np.ndarray,
    given: dict[str, np.ndarray],
    split: tuple[float, float, float],
    val_size: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Train/val/test indices: the source's own splits where it has them, else seeded ones.

    Args:
        labels: class index per image, or (N, K) multi-hot.
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


def kfold_indices(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs of stratified k-fold cross-validation.

    Uses scikit-learn's StratifiedKFold, or MultilabelStratifiedKFold for multi-hot labels;
    every index is in exactly one validation fold.
    """
    if labels.ndim == 2:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(len(labels)), labels)]
