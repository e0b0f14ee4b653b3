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
    fired: list[int | None] = []

    together = threading.Barrier(2)

    def decide(store: TrainingPairs) -> None:
        together.wait()  # both decide at the same moment
        recorded = store.record_retrain_if("feedback", 100.0, 0.0, min_new_positive=3)
        fired.append(recorded.pairs if recorded else None)

    for _ in range(10):  # ten rounds of two workers deciding at once: each round fires exactly once
        fired.clear()
        first.add([pair(f"round{len(first.retrains())}-{i}") for i in range(3)])
        threads = [threading.Thread(target=decide, args=(store,)) for store in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(fired, key=str) == [3, None]  # one of the two workers fires
    # a host whose clock is an hour behind still sees the new pairs: counted by sequence, not by time
    second.add([pair(f"late{i}") for i in range(3)], now=100.0 - 3600)
    assert second.record_retrain_if("feedback", 300.0, 0.0, min_new_positive=3).pairs == 3  # type: ignore[union-attr]
    before = first.sequence()
    first.prune(max_rows=1_000, max_age_s=1.0, now=time.time() + 10.0)
    assert first.count() == 0 and first.sequence() == before  # pruning never rewinds the sequence


def test_workers_claiming_held_feedback_at_once_each_get_a_record_once(state_databases: StateDatabases) -> None:
    stores = [TrainingPairs(state_databases.open("feedback state")) for _ in range(4)]
    held = [PendingFeedback("feedback", offset % 3, offset, None, b"{}", f"q{offset}", 1.0) for offset in range(60)]
    stores[0].hold(held)
    claimed: list[list[PendingFeedback]] = [[] for _ in stores]
    together = threading.Barrier(len(stores))

    def settle(index: int) -> None:
        together.wait()  # every worker claims the whole hold at the same moment, each in its own order
        mine = held[index:] + held[:index]
        claimed[index] = stores[index].claim(mine[::-1] if index % 2 else mine, now=10.0, lease_s=60.0)[1]

    threads = [threading.Thread(target=settle, args=(index,)) for index in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [p for mine in claimed for p in mine]
    assert sorted(everything, key=lambda p: p.offset) == held  # each record claimed by exactly one worker


def test_text_postgresql_cannot_hold_is_kept_as_replacement_characters(state_databases: StateDatabases) -> None:
    store = TrainingPairs(state_databases.open("feedback state"))
    store.add([TrainingPair("q\x00", "a query with a NUL\x00", "d", "text\x00", "positive", "feedback", "f/0@1")])
    (kept,) = store.pairs()
    expected = "\x00" if state_databases.backend == "sqlite" else "\ufffd"  # SQLite keeps it; TEXT refuses it
    assert (kept.query_id, kept.query, kept.text) == (f"q{expected}", f"a query with a NUL{expected}",
                                                      f"text{expected}")
