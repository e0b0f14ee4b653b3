"""The training job's data handling: a stable split by query, triplets with real negatives, lineage offsets."""

from __future__ import annotations

from streams.ml.trainer import feedback_offsets
from streams.ml.training import held_out, split_pairs, triplets
from streams.state.training_pairs import TrainingPair


def pair(query_id: str, doc_id: str, kind: str = "positive", offset: str = "ns.feedback/0@1") -> dict[str, str]:
    return {"query_id": query_id, "query": f"query {query_id}", "doc_id": doc_id, "text": f"text of {doc_id}",
            "kind": kind, "source": "feedback", "feedback_offset": offset}


def test_split_is_by_query_stable_and_near_the_fraction() -> None:
    ids = [f"q{i}" for i in range(4000)]
    share = sum(held_out(q, 0.2) for q in ids) / len(ids)
    assert 0.17 < share < 0.23
    assert [held_out(q, 0.2) for q in ids] == [held_out(q, 0.2) for q in ids]


def test_held_out_queries_keep_only_their_positives_and_never_train() -> None:
    pairs = [pair(f"q{i}", f"d{i}") for i in range(200)] + [pair(f"q{i}", "bad", "negative") for i in range(200)]
    train, judged = split_pairs(pairs, 0.25)
    trained_queries = {p["query_id"] for p in train}
    assert judged and not trained_queries & judged.keys()
    assert len(trained_queries) + len(judged) == 200
    assert all(relevance == {f"d{q[1:]}": 1} for q, (_, relevance) in judged.items())


def test_triplets_prefer_hard_negatives_and_never_use_a_positive_as_negative() -> None:
    corpus = {f"d{i}": f"text of d{i}" for i in range(20)}
    train = [pair("q1", "d1"), pair("q1", "d2", "negative"), pair("q2", "d3"), pair("q2", "d4"), pair("q3", "d5")]
    rows = triplets(train, corpus, seed=1)
    assert ("query q1", "text of d1", "text of d2") in rows
    assert len(rows) == 4  # one per positive
    for query, _, negative in rows:
        if query == "query q2":
            assert negative not in {"text of d3", "text of d4"}


def test_feedback_offsets_span_each_partition() -> None:
    pairs = [TrainingPair("q", "q", f"d{o}", "t", "positive", "feedback", f"ns.feedback/{p}@{o}")
             for p, o in [(0, 5), (0, 2), (1, 9), (0, 7)]]
    assert feedback_offsets(pairs) == {"ns.feedback/0": [2, 7], "ns.feedback/1": [9, 9]}
