"""The SQLite state recovers from a failed write: a lock held past the busy timeout by another process fails the
write with a typed, retryable error and leaves the connection clean, so the next write succeeds (before, the failed
`BEGIN` was never rolled back and every later write failed for good)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streams.state.errors import StateUnavailable
from streams.state.evaluation_store import AnswerRecord, EvaluationStore
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.sqlite import SqliteDatabase
from streams.state.training_pairs import TrainingPair, TrainingPairs


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
