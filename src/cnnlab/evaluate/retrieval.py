"""Retrieval with penultimate-layer features (seed 002 §3.3): mean average precision and
precision at k of ranking a gallery by cosine similarity to each query."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score


def retrieval_scores(
    q_feats: np.ndarray,
    q_labels: np.ndarray,
    g_feats: np.ndarray,
    g_labels: np.ndarray,
    same_set: bool = False,
    k: int = 10,
    max_queries: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Rank the gallery by cosine similarity to each query; an item is relevant when it has the
    query's class. With ``same_set`` the query itself is left out of its own ranking. At most
    ``max_queries`` queries (a seeded sample).

    Returns:
        ``map`` (mean of scikit-learn's average precision over queries with a relevant item),
        ``precision_at_k`` (mean share of relevant items among the ``k`` most similar), ``queries``
        (how many were asked), ``scored`` (those with a relevant item) and ``of`` (how many there
        were); the figures are None when no query has a relevant item."""
    q = q_feats / np.maximum(np.linalg.norm(q_feats, axis=1, keepdims=True), 1e-12)
    g = g_feats / np.maximum(np.linalg.norm(g_feats, axis=1, keepdims=True), 1e-12)
    order = np.arange(len(q))
    if len(order) > max_queries:
        order = np.sort(np.random.default_rng(seed).choice(order, max_queries, replace=False))
    aps, pks = [], []
    for i in order:
        sims = g @ q[i]
        rel = g_labels == q_labels[i]
        if same_set:
            keep = np.ones(len(g), bool)
            keep[i] = False
            sims, rel = sims[keep], rel[keep]
        if rel.any():
            aps.append(average_precision_score(rel, sims))
            top = np.argsort(-sims, kind="stable")[:k]
            pks.append(float(rel[top].sum()) / k)
    return {
        "map": float(np.mean(aps)) if aps else None,
        "precision_at_k": float(np.mean(pks)) if pks else None,
        "k": k,
        "queries": len(order),
        "scored": len(aps),
        "of": len(q),
    }
