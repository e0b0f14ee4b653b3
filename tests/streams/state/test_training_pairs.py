"""The feedback state shared by several workers, on SQLite (one file) and PostgreSQL (one database): held feedback
is settled once, retrain decisions are taken once, counters are shared."""

from __future__ import annotations

import threading
import time

from streams.state.training_pairs import PendingFeedback, TrainingPair, TrainingPairs
from tests.conftest import StateDatabases


def pair(query_id: str) -> TrainingPair:
    return TrainingPair(query_id, "q", "d", "text", "positive", "feedback", "feedback/0@1")


def workers(state_databases: StateDatabases) -> tuple[TrainingPairs, TrainingPairs]:
    """Two workers' views of one feedback state."""
    return (TrainingPairs(state_databases.open("feedback state")),
            TrainingPairs(state_databases.open("feedback state")))


def test_held_feedback_is_settled_by_one_worker_at_a_time(state_databases: StateDatabases) -> None:
    first, second = workers(state_databases)
    held = [PendingFeedback("feedback", 0, offset, b"q", b"{}", f"q{offset}", 1.0) for offset in range(4)]
    first.hold(held)
    token, mine = first.claim(held[:3], now=10.0, lease_s=60.0)
    _, theirs = second.claim(held, now=10.0, lease_s=60.0)
    assert mine == held[:3] and theirs == held[3:]  # each record settled by exactly one of them
    assert second.held(now=20.0) == []  # a claimed record is not offered again while its claim lasts
    assert first.claim(held[:1], now=20.0, lease_s=60.0)[1] == []  # nor to another settle of the same worker
    second.release(token, held[:1])  # a release under another claim's token changes nothing
    first.unclaim(token, held[1:2])  # still waiting for its query: back in the hold
    assert second.held(now=20.0) == [held[1]]
    first.release(token, held[:1])
    assert [p.offset for p in first.held(now=100.0)] == [1, 2, 3]  # released; the other claims lapsed (died)
    assert second.claim(held[2:3], now=100.0, lease_s=60.0)[1] == held[2:3]


def test_retrain_requests_are_decided_once_by_pair_sequence_not_by_clocks(state_databases: StateDatabases) -> None:
    first, second = workers(state_databases)
    first.add([pair(f"q{i}") for i in range(3)])
    fired = []

    def decide(store: TrainingPairs) -> None:
        recorded = store.record_retrain_if("feedback", 100.0, 0.0, min_new_positive=3)
        fired.append(recorded.pairs if recorded else None)

    threads = [threading.Thread(target=decide, args=(store,)) for store in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(fired, key=str) == [3, None]  # one of the two workers fires
    # a host whose clock is an hour behind still sees the new pairs: counted by sequence, not by time
    second.add([pair(f"late{i}") for i in range(3)], now=100.0 - 3600)
    assert second.record_retrain_if("feedback", 200.0, 0.0, min_new_positive=3).pairs == 3  # type: ignore[union-attr]
    before = first.sequence()
    first.prune(max_rows=1_000, max_age_s=1.0, now=time.time() + 10.0)
    assert first.count() == 0 and first.sequence() == before  # pruning never rewinds the sequence
