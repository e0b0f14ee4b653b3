from __future__ import annotations

import math

import pytest

from streams.ml.ranking import documents_by_best_chunk, mrr_at, ndcg_at, percentile, recall_at


def test_ndcg_matches_a_hand_computed_value() -> None:
    judged = {"a": 2, "b": 1}
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(["x", "a", "b"], judged, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b"], judged, 10) == pytest.approx(1.0)
    assert ndcg_at(["x"], judged, 10) == 0.0


def test_recall_and_mrr() -> None:
    judged = {"a": 1, "b": 1, "c": 0}
    assert recall_at(["a", "x", "c"], judged, 100) == 0.5
    assert recall_at(["x"] * 100 + ["a"], judged, 100) == 0.0
    assert mrr_at(["x", "c", "b"], judged, 10) == pytest.approx(1 / 3)
    assert mrr_at(["x"] * 10 + ["a"], judged, 10) == 0.0


def test_documents_are_ranked_by_their_best_chunk() -> None:
    hits = [{"doc_id": "a", "chunk": 3}, {"doc_id": "b", "chunk": 0}, {"doc_id": "a", "chunk": 0}]
    assert documents_by_best_chunk(hits) == ["a", "b"]


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
