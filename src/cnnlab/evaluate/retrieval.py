"""Retrieval mean average precision with penultimate-layer features (seed 002 §3.3)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score


def retrieval_map(
    q_feats: np.ndarray,
    q_labels: np.ndarray,
    g_feats: np.ndarray,
    g_labels: np.ndarray,
    same_set: bool = False,
    max_queries: int = 1000,
    seed: int = 0,
) -> float | None:
    """Mean average precision of ranking the gallery by cosine similarity to each query; an
    item is relevant when it has the query's class. With ``same_set`` the query itself is
    left out of its own ranking. At most ``max_queries`` queries (a seeded sample)."""
    q = q_feats / np.maximum(np.linalg.norm(q_feats, axis=1, keepdims=True), 1e-12)
    g = g_feats / np.maximum(np.linalg.norm(g_feats, axis=1, keepdims=True), 1e-12)
    order = np.arange(len(q))
    if len(order) > max_queries:
        order = np.sort(np.random.default_rng(seed).choice(order, max_queries, replace=False))
    aps = []
    for i in order:
        sims = g @ q[i]
        rel = g_labels == q_labels[i]
        if same_set:
            keep = np.ones(len(g), bool)
            keep[i] = False
            sims, rel = sims[keep], rel[keep]
        if rel.any():
            aps.append(average_precision_score(rel, sims))
    return float(np.mean(aps)) if aps else None
