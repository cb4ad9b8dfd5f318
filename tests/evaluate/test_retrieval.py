"""Retrieval mAP on worked examples whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.evaluate.retrieval import retrieval_map


def test_perfectly_separated_classes_give_map_1_and_a_known_ranking_gives_its_hand_computed_value():
    feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    assert retrieval_map(feats, labels, feats, labels, same_set=True) == pytest.approx(1.0)
    # one query (class 0) against a gallery ranked: relevant, irrelevant, relevant by similarity
    q = np.array([[1.0, 0.0]])
    gallery = np.array([[1.0, 0.05], [0.9, 0.3], [0.6, 0.8]])
    # AP = (1/1 + 2/3) / 2 = 0.8333
    assert retrieval_map(q, np.array([0]), gallery, np.array([0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)


def test_the_query_is_left_out_of_its_own_ranking_and_a_query_without_relevant_items_is_skipped():
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    labels = np.array([0, 1, 2])  # every class once: with itself left out no query has a relevant item
    assert retrieval_map(feats, labels, feats, labels, same_set=True) is None
    assert retrieval_map(feats, labels, feats, labels, same_set=False) == pytest.approx(1.0)
