"""Retrieval mAP and precision at k on worked examples whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.evaluate.retrieval import retrieval_scores


def _map(*args, **kw):
    return retrieval_scores(*args, **kw)["map"]


def test_perfectly_separated_classes_give_map_1_and_a_known_ranking_gives_its_hand_computed_value():
    feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    assert _map(feats, labels, feats, labels, same_set=True) == pytest.approx(1.0)
    # one query (class 0) against a gallery ranked: relevant, irrelevant, relevant by similarity
    q = np.array([[1.0, 0.0]])
    gallery = np.array([[1.0, 0.05], [0.9, 0.3], [0.6, 0.8]])
    # AP = (1/1 + 2/3) / 2 = 0.8333; P@2 = 1/2; P@3 = 2/3
    res = retrieval_scores(q, np.array([0]), gallery, np.array([0, 1, 0]), k=2)
    assert res["map"] == pytest.approx((1 + 2 / 3) / 2)
    assert res["precision_at_k"] == pytest.approx(0.5) and res["queries"] == 1 and res["of"] == 1
    assert retrieval_scores(q, np.array([0]), gallery, np.array([0, 1, 0]), k=3)["precision_at_k"] == pytest.approx(
        2 / 3
    )


def test_the_query_is_left_out_of_its_own_ranking_and_a_query_without_relevant_items_is_skipped():
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    labels = np.array([0, 1, 2])  # every class once: with itself left out no query has a relevant item
    res = retrieval_scores(feats, labels, feats, labels, same_set=True)
    assert res["map"] is None and res["precision_at_k"] is None and res["scored"] == 0 and res["queries"] == 3
    assert _map(feats, labels, feats, labels, same_set=False) == pytest.approx(1.0)


def test_precision_at_k_counts_the_k_nearest_after_leaving_the_query_out():
    rng = np.random.default_rng(0)
    feats, labels = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    res = retrieval_scores(feats, labels, feats, labels, same_set=True, k=5, max_queries=25)
    assert res["queries"] == 25 and res["of"] == 40
    # by hand for every query: the 5 most cosine-similar other items
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sims = f @ f.T
    np.fill_diagonal(sims, -np.inf)
    full = retrieval_scores(feats, labels, feats, labels, same_set=True, k=5)
    hand = np.mean([(labels[np.argsort(-sims[i])[:5]] == labels[i]).mean() for i in range(40)])
    assert full["precision_at_k"] == pytest.approx(hand)
