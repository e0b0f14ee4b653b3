from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from streams.evaluation import documents_by_best_chunk, load_beir, mrr_at, ndcg_at, percentile, recall_at


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


def test_load_beir_keeps_only_judged_queries(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "find body"}) + "\n" + json.dumps({"_id": "q2", "text": "unjudged"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    dataset = load_beir(tmp_path)
    assert dataset.corpus == {"d1": ("T", "body")} and dataset.queries == {"q1": "find body"}
    assert dataset.qrels == {"q1": {"d1": 1}}
    with pytest.raises(FileNotFoundError, match="BEIR"):
        load_beir(tmp_path / "qrels")
