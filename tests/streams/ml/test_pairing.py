from __future__ import annotations

import pytest

from schemas import FeedbackEvent
from streams.ml.pairing import UNPUBLISHED_AFTER_S, RetrainPolicy, pairs_from_feedback
from streams.state.query_log import LoggedQuery
from streams.state.training_pairs import Judgement, TrainingPair, TrainingPairs
from tests.conftest import StateDatabases

LOGGED = LoggedQuery("q1", {"text": "green tea temperature"}, {"hits": [
    {"doc_id": "a", "chunk": 0, "score": 0.9, "text": "a0"}, {"doc_id": "b", "chunk": 1, "score": 0.8, "text": "b1"},
    {"doc_id": "a", "chunk": 2, "score": 0.7, "text": "a2"}, {"doc_id": "c", "chunk": 0, "score": 0.6, "text": "c0"},
]}, 1.0, "kafka")


def no_documents(doc_id: str) -> str | None:
    return None


def summary(pairs: list[TrainingPair] | None) -> list[tuple[str, str, str, str]]:
    assert pairs is not None
    return [(p.doc_id, p.text, p.kind, p.source) for p in pairs]


def test_positive_makes_hard_negatives_of_lower_served_hits() -> None:
    pairs = pairs_from_feedback(FeedbackEvent(query_id="q1", doc_id="b", label=1), LOGGED, no_documents, "f/0@7")
    assert summary(pairs) == [("b", "b1", "positive", "feedback"), ("c", "c0", "negative", "served")]
    assert pairs is not None and pairs[0].query == "green tea temperature" and pairs[0].feedback_offset == "f/0@7"


def test_ratings_map_to_judgements() -> None:
    assert summary(pairs_from_feedback(FeedbackEvent(query_id="q1", doc_id="c", rating=2), LOGGED, no_documents,
                                       "x")) == [("c", "c0", "negative", "feedback")]
    assert pairs_from_feedback(FeedbackEvent(query_id="q1", doc_id="c", rating=3), LOGGED, no_documents, "x") == []
    assert summary(pairs_from_feedback(FeedbackEvent(query_id="q1", doc_id="a", rating=5), LOGGED, no_documents,
                                       "x"))[0] == ("a", "a0", "positive", "feedback")


def test_a_judged_document_that_was_not_served_uses_its_indexed_text() -> None:
    pairs = pairs_from_feedback(FeedbackEvent(query_id="q1", doc_id="z", label=1), LOGGED,
                                lambda d: "z text" if d == "z" else None, "x")
    assert summary(pairs) == [("z", "z text", "positive", "feedback")]
    assert pairs_from_feedback(FeedbackEvent(query_id="q1", doc_id="nope", label=1), LOGGED, no_documents,
                               "x") is None


@pytest.fixture
def store(state_databases: StateDatabases) -> TrainingPairs:
    """The feedback state's contract runs on SQLite and PostgreSQL."""
    return TrainingPairs(state_databases.open("feedback state"))


def pair(query_id: str, doc_id: str, kind: str = "positive", source: str = "feedback") -> TrainingPair:
    return TrainingPair(query_id, "q", doc_id, "t", kind, source, "f/0@1")


def test_pairs_are_idempotent_and_explicit_judgements_win(store: TrainingPairs) -> None:
    store.add([pair("q1", "a"), pair("q1", "b", "negative", "served")])
    store.add([pair("q1", "a"), pair("q1", "b", "positive")])  # re-delivery, then an explicit positive for b
    store.add([pair("q1", "b", "negative", "served")])  # an inferred negative never overrides it
    assert [(p.doc_id, p.kind, p.source) for p in store.for_query("q1")] == [("a", "positive", "feedback"),
                                                                             ("b", "positive", "feedback")]


def test_policy_fires_every_n_positives_and_is_rate_limited(store: TrainingPairs) -> None:
    now = [1000.0]
    policy = RetrainPolicy(store, every_positive=2, min_interval_s=100, clock=lambda: now[0])
    store.add([pair("q1", "a")], now=now[0])
    assert policy.after_new_pairs() is None
    store.add([pair("q2", "a"), pair("q2", "b", "negative")], now=now[0])
    fired = policy.after_new_pairs()
    assert fired is not None and fired.request.reason == "feedback" and fired.request.pairs == 3
    now[0] += 10
    store.add([pair("q3", "a"), pair("q4", "a"), pair("q5", "a")], now=now[0])
    assert policy.after_new_pairs() is None  # a burst inside the interval: no retrain storm
    now[0] += 100
    assert policy.after_new_pairs() is not None
    assert [r["reason"] for r in store.retrains()] == ["feedback", "feedback"]


def test_schedule_fires_only_with_new_pairs(store: TrainingPairs) -> None:
    now = [1000.0]
    policy = RetrainPolicy(store, every_positive=100, min_interval_s=0, schedule_s=60, clock=lambda: now[0])
    now[0] += 61
    assert policy.on_tick() is None  # nothing new to learn from
    store.add([pair("q1", "a")], now=now[0])
    fired = policy.on_tick()
    assert fired is not None and fired.request.reason == "schedule" and fired.request.pairs == 1
    assert policy.on_tick() is None


def test_a_recorded_request_never_published_is_published_again_later(store: TrainingPairs) -> None:
    now = [1000.0]
    policy = RetrainPolicy(store, every_positive=1, min_interval_s=0, clock=lambda: now[0])
    store.add([pair("q1", "a")], now=now[0])
    fired = policy.after_new_pairs()
    assert fired is not None  # recorded; the worker stops before it publishes it
    assert policy.unpublished() == []  # (the worker that recorded it may be publishing it right now)
    now[0] += UNPUBLISHED_AFTER_S + 1
    (again,) = policy.unpublished()
    assert again.row == fired.row and again.request == fired.request
    assert policy.unpublished() == []  # claimed: another worker's tick leaves it to this one
    now[0] += UNPUBLISHED_AFTER_S + 1
    assert [p.row for p in policy.unpublished()] == [fired.row]  # that claim lapsed too (its worker stopped)
    store.retrain_published(again.row)
    now[0] += UNPUBLISHED_AFTER_S + 1
    assert policy.unpublished() == []


SERVED = (("a", "a0"), ("b", "b1"), ("c", "c0"), ("d", "d0"))


def judged(doc_id: str, judgement: int, offset: int, partition: int = 0) -> Judgement:
    return Judgement("q1", "q", doc_id, f"{doc_id} text", judgement, "f", partition, offset, float(offset),
                     SERVED)


def kinds(store: TrainingPairs) -> dict[str, tuple[str, str, str]]:
    return {p.doc_id: (p.kind, p.source, p.feedback_offset) for p in store.for_query("q1")}


def test_hard_negatives_follow_the_positives_that_infer_them(store: TrainingPairs) -> None:
    store.judge([judged("a", 1, 1), judged("c", 1, 2)])  # b, d below a; d below c as well
    assert kinds(store) == {"a": ("positive", "feedback", "f/0@1"), "b": ("negative", "served", "f/0@1"),
                            "c": ("positive", "feedback", "f/0@2"), "d": ("negative", "served", "f/0@1")}
    store.judge([judged("a", -1, 3)])  # a withdrawn: b goes, d stays (c still infers it), now from c
    assert kinds(store) == {"a": ("negative", "feedback", "f/0@3"), "c": ("positive", "feedback", "f/0@2"),
                            "d": ("negative", "served", "f/0@2")}
    store.judge([judged("d", -1, 4), judged("c", 0, 5)])  # an explicit negative stays; neutral c removes its pair
    assert kinds(store) == {"a": ("negative", "feedback", "f/0@3"), "d": ("negative", "feedback", "f/0@4")}
    store.judge([judged("a", 0, 6), judged("d", 0, 7)])  # a later neutral rating removes the explicit negatives
    assert kinds(store) == {}


def test_a_document_judged_neutral_is_never_an_inferred_negative(store: TrainingPairs) -> None:
    """A neutral rating is still a judgement: it overrides what a positive above it would infer."""
    store.judge([judged("a", 1, 1), judged("c", -1, 2), judged("c", 0, 3)])
    assert "c" not in kinds(store) and kinds(store)["b"] == ("negative", "served", "f/0@1")
    store.judge([judged("b", 0, 4)])
    assert kinds(store) == {"a": ("positive", "feedback", "f/0@1"), "d": ("negative", "served", "f/0@1")}


def test_a_judgement_older_than_the_applied_one_or_re_delivered_changes_nothing(store: TrainingPairs) -> None:
    assert [p.doc_id for p in store.judge([judged("a", -1, 5)])] == ["a"]
    before, sequence = kinds(store), store.sequence()
    assert store.judge([judged("a", 1, 4), judged("a", -1, 5)]) == []  # late, then re-delivered
    assert (kinds(store), store.sequence()) == (before, sequence)
    store.judge([judged("a", 1, 2, partition=1)])  # another partition (the topic was resized): applied as it comes
    assert kinds(store)["a"] == ("positive", "feedback", "f/1@2")


def test_pairs_stored_before_judgements_were_kept_follow_the_next_judgement(store: TrainingPairs) -> None:
    store.add([pair("q1", "a"), pair("q1", "b", "negative", "served")])  # an older release's pairs: no judgements
    store.judge([Judgement("q1", "q", "a", "t", 0, "f", 0, 9, 9.0, SERVED)])
    assert kinds(store) == {}
