"""The SQLite state recovers from a failed write: a lock held past the busy timeout by another process fails the
write with a typed, retryable error and leaves the connection clean, so the next write succeeds (before, the failed
`BEGIN` was never rolled back and every later write failed for good)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streams.state.errors import StateUnavailable
from streams.state.evaluation_store import AnswerRecord, EvaluationStore
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.sqlite import SqliteDatabase
from streams.state.training_pairs import PendingFeedback, TrainingPair, TrainingPairs


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another connection (as another process would) holds the database's write lock."""
    other = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def logged(query_id: str) -> LoggedQuery:
    return LoggedQuery(query_id, {"text": "q"}, {"hits": [], "model_version": "v1", "index_version": "v1"}, 1.0,
                       "kafka")


def pair(query_id: str) -> TrainingPair:
    return TrainingPair(query_id, "q", "d", "text", "positive", "feedback", "feedback/0@1")


def answer(query_id: str) -> AnswerRecord:
    return AnswerRecord(query_id, "serving", "v1", "v1", 1.0, ["d"], 1.0, "short", "", "")


STORES: dict[str, tuple[Callable[[Path], object], Callable[[object, str], None], Callable[[object], int]]] = {
    "query log": (lambda p: QueryLog(p, busy_timeout_s=0.2),
                  lambda s, q: s.record([logged(q)]),  # type: ignore[attr-defined]
                  lambda s: s.count()),  # type: ignore[attr-defined]
    "feedback state": (lambda p: TrainingPairs(p, busy_timeout_s=0.2),
                       lambda s, q: s.add([pair(q)]),  # type: ignore[attr-defined]
                       lambda s: s.count()),  # type: ignore[attr-defined]
    "evaluation store": (lambda p: EvaluationStore(p, busy_timeout_s=0.2),
                         lambda s, q: s.record_answers([answer(q)]),  # type: ignore[attr-defined]
                         lambda s: len(s.answers())),  # type: ignore[attr-defined]
}


@pytest.mark.parametrize("name", sorted(STORES))
def test_a_write_that_fails_on_a_lock_rolls_back_and_the_next_one_succeeds(tmp_path: Path, name: str) -> None:
    make, write, count = STORES[name]
    path = tmp_path / "state.sqlite3"
    store = make(path)
    write(store, "before")
    with locked(path):
        with pytest.raises(StateUnavailable) as failed:
            write(store, "during")
        assert failed.value.store == name
        assert count(store) == 1  # reads go on under another writer's lock (WAL)
    write(store, "after")  # the connection was left clean
    write(store, "during")  # the retry of the failed write
    assert count(store) == 3


def test_a_wrong_statement_is_a_bug_not_an_outage(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "x.sqlite3", "x")
    database.execute("CREATE TABLE t (a INTEGER)")
    with pytest.raises(sqlite3.OperationalError):  # retried forever if it were taken for an outage
        database.execute("SELECT missing FROM t")
    with pytest.raises(sqlite3.IntegrityError), database.transaction() as db:
        db.execute("CREATE TABLE u (a INTEGER NOT NULL)")
        db.execute("INSERT INTO u VALUES (NULL)")
    assert database.fetchall("SELECT name FROM sqlite_master WHERE name = 'u'") == []  # rolled back whole


def test_commits_are_durable_before_offsets_are_committed(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "x.sqlite3", "x")
    assert database.fetchone("PRAGMA synchronous")[0] == 2  # FULL: fsync at every commit, not only at checkpoints
    assert database.fetchone("PRAGMA journal_mode")[0] == "wal"


def test_held_feedback_is_settled_by_one_worker_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    first, second = TrainingPairs(path), TrainingPairs(path)  # two workers on the shared volume
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


def test_retrain_requests_are_decided_once_by_pair_sequence_not_by_clocks(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    first, second = TrainingPairs(path), TrainingPairs(path)
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
