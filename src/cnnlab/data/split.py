"""Seeded, stratified train/val/test splits and k-fold indices, single- and multi-label, and
group-aware (a group of images, the same scene or painting, stays inside one part)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.core.patterns import user_pattern


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


def image_groups(paths: Sequence[str] | None, given: Sequence[str] | None, pattern: str | None) -> np.ndarray | None:
    """One group name per image: the CSV's group column, else what ``pattern`` (``data.group_by``)
    matches in the image's path (its first group if it has one, else the whole match); a path it
    does not match is a group of its own. None when the data has no groups."""
    if given is not None:
        return np.asarray(given, dtype=object)
    if pattern is None:
        return None
    if paths is None:
        raise CnnlabError("data.group_by groups image files by their paths; this source has no files")
    if not paths:  # nothing readable: the caller says so; there is nothing to group
        return np.zeros(0, dtype=object)
    rx = user_pattern(pattern)  # RE2: linear in the path's length, whatever the pattern
    out = []
    for p in paths:
        m = rx.search(p)
        out.append((m.group(1) if rx.groups else m.group(0)) if m else "\0" + p)
    if all(g.startswith("\0") for g in out):
        raise CnnlabError(f"data.group_by {pattern!r} matches none of the {len(out)} file paths (e.g. {paths[0]!r})")
    return np.asarray(out, dtype=object)


def _group_codes(groups: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]


def grouped_split(labels: np.ndarray, groups: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Like :func:`stratified_split`, but every group inside one part: scikit-learn's
    StratifiedGroupKFold into n folds (n from the smallest non-zero later fraction, e.g. 10 for
    0.8/0.1/0.1), the later parts taking their share of folds and the first the rest. Multi-label
    data is stratified by each image's first label. Fractions are met as closely as whole groups
    allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    codes = _group_codes(groups)
    later = [f for f in fractions[1:] if f > 0]
    if not later:
        return [np.arange(len(labels))] + [np.zeros(0, np.int64) for _ in fractions[1:]]
    n = max(2, int(round(1 / min(later))))
    if len(np.unique(codes)) < n:
        raise CnnlabError(
            f"the data has {len(np.unique(codes))} groups; a split {'/'.join(map(str, fractions))} keeping groups "
            f"whole needs at least {n} (check data.group_by or the CSV's group column)"
        )
    y = labels.argmax(1) if labels.ndim == 2 else labels
    folds = [va for _, va in StratifiedGroupKFold(n, shuffle=True, random_state=seed).split(y, y, codes)]
    parts: list[np.ndarray] = []
    start = 0
    for f in fractions[1:]:
        take = max(1, int(round(f * n))) if f > 0 else 0
        parts.append(np.concatenate(folds[start : start + take]) if take else np.zeros(0, np.int64))
        start += take
    first = np.concatenate(folds[start:]) if start < n else np.zeros(0, np.int64)
    return [np.sort(p).astype(np.int64) for p in [first, *parts]]


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
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Train/val/test indices: the source's own splits where it has them, else seeded ones.

    Args:
        labels: class index per image, or (N, K) multi-hot.
        given: splits the source defines (a pre-split folder, a benchmark's train/test).
        split: train/val/test fractions for sources without splits.
        val_size: when the source gives train but no val: a fraction (<1) or count of train.
        seed: the run's seed.
        groups: a group name per image (:func:`image_groups`): seeded splits keep each group inside
            one split; a group that a source's own splits cut is an error.
    """
    if groups is not None and given:
        _check_given_groups(given, groups)
    if not given:
        parts = (
            grouped_split(labels, groups, split, seed) if groups is not None else stratified_split(labels, split, seed)
        )
        return dict(zip(("train", "val", "test"), parts))
    out = {k: np.asarray(v, dtype=np.int64) for k, v in given.items()}
    if "val" not in out:
        train = out["train"]
        frac = val_size if val_size < 1 else min(val_size / max(len(train), 1), 1.0)
        keep, val = (
            grouped_split(labels[train], groups[train], (1 - frac, frac), seed)
            if groups is not None
            else stratified_split(labels[train], (1 - frac, frac), seed)
        )
        out["train"], out["val"] = train[keep], train[val]
    out.setdefault("test", np.zeros(0, np.int64))
    return {k: out[k] for k in ("train", "val", "test")}


def _check_given_groups(given: dict[str, np.ndarray], groups: np.ndarray) -> None:
    where: dict[str, str] = {}
    for name, idx in given.items():
        for g in {str(x) for x in np.asarray(groups)[idx]}:
            if where.setdefault(g, name) != name:
                raise CnnlabError(
                    f"group {g!r} has images in both the {where[g]!r} and the {name!r} split the data gives: "
                    "move them into one split, or do not group"
                )


def kfold_indices(
    labels: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs of stratified k-fold cross-validation.

    Uses scikit-learn's StratifiedKFold, or MultilabelStratifiedKFold for multi-hot labels, or
    with ``groups`` StratifiedGroupKFold (by the first label when multi-label) so that every group
    sits in one fold; every index is in exactly one validation fold.
    """
    if groups is not None:
        from sklearn.model_selection import StratifiedGroupKFold

        codes = _group_codes(groups)
        if len(np.unique(codes)) < k:
            raise CnnlabError(
                f"{k}-fold CV keeping groups whole needs at least {k} groups; the data has {len(np.unique(codes))}"
            )
        y = labels.argmax(1) if labels.ndim == 2 else labels
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, codes)
        return [(np.sort(tr), np.sort(va)) for tr, va in folds]
    if labels.ndim == 2:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(len(labels)), labels)]
