"""Durable feedback state (SQLite, WAL): feedback waiting for its query, training pairs, and retrain history."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.state.sqlite import open_wal_database


@dataclass(frozen=True)
class PendingFeedback:
    """A valid feedback record whose query/response is not in the query log yet."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    query_id: str
    received_at: float


@dataclass(frozen=True)
class TrainingPair:
    """One judged (query, document text) example; `kind` is "positive" or "negative"."""

    query_id: str
    query: str
    doc_id: str
    text: str
    kind: str
    source: str  # "feedback" (explicitly judged) or "served" (an unjudged hit ranked below a positive)
    feedback_offset: str  # topic/partition@offset of the feedback record behind it (lineage)


class TrainingPairs:
    """Pairs are keyed by (query_id, doc_id): a re-delivered or repeated judgement overwrites, never duplicates."""

    def __init__(self, path: Path) -> None:
        self._db = open_wal_database(path)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript("""
                CREATE TABLE IF NOT EXISTS pending (topic TEXT, partition INTEGER, "offset" INTEGER, key BLOB,
                    value BLOB NOT NULL, query_id TEXT NOT NULL, received_at REAL NOT NULL,
                    PRIMARY KEY (topic, partition, "offset"));
                CREATE TABLE IF NOT EXISTS pairs (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, query TEXT NOT NULL,
                    text TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, feedback_offset TEXT NOT NULL,
                    created_at REAL NOT NULL, PRIMARY KEY (query_id, doc_id));
                CREATE INDEX IF NOT EXISTS pairs_created_at ON pairs (created_at);
                CREATE TABLE IF NOT EXISTS retrains (requested_at REAL NOT NULL, reason TEXT NOT NULL,
                    pairs INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS trainings (snapshot_at REAL NOT NULL, finished_at REAL NOT NULL,
                    version TEXT, status TEXT NOT NULL, reason TEXT);
            """)

    def hold(self, pending: Sequence[PendingFeedback]) -> None:
        rows = [(p.topic, p.partition, p.offset, p.key, p.value, p.query_id, p.received_at) for p in pending]
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def held(self) -> list[PendingFeedback]:
        with self._lock:
            rows = self._db.execute('SELECT topic, partition, "offset", key, value, query_id, received_at '
                                    "FROM pending ORDER BY received_at").fetchall()
        return [PendingFeedback(*row) for row in rows]

    def release(self, pending: Sequence[PendingFeedback]) -> None:
        with self._lock:
            self._db.executemany('DELETE FROM pending WHERE topic = ? AND partition = ? AND "offset" = ?',
                                 [(p.topic, p.partition, p.offset) for p in pending])

    def add(self, pairs: Sequence[TrainingPair], now: float | None = None) -> None:
        """Insert or overwrite; an explicit judgement always wins over a pair inferred from served hits."""
        stamp = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN")
            for p in pairs:
                row = (p.query_id, p.doc_id, p.query, p.text, p.kind, p.source, p.feedback_offset, stamp)
                if p.source == "feedback":
                    self._db.execute("INSERT OR REPLACE INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                else:
                    self._db.execute("INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._db.execute("COMMIT")

    def pairs(self, since: float = 0.0) -> list[TrainingPair]:
        with self._lock:
            rows = self._db.execute("SELECT query_id, query, doc_id, text, kind, source, feedback_offset FROM pairs "
                                    "WHERE created_at > ? ORDER BY created_at, query_id, doc_id", (since,)).fetchall()
        return [TrainingPair(*row) for row in rows]

    def count(self, kind: str | None = None, since: float = 0.0) -> int:
        query, params = "SELECT COUNT(*) FROM pairs WHERE created_at > ?", [since]
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind)  # type: ignore[arg-type]
        with self._lock:
            return int(self._db.execute(query, params).fetchone()[0])

    def for_query(self, query_id: str) -> list[TrainingPair]:
        with self._lock:
            rows = self._db.execute("SELECT query_id, query, doc_id, text, kind, source, feedback_offset FROM pairs "
                                    "WHERE query_id = ? ORDER BY kind DESC, doc_id", (query_id,)).fetchall()
        return [TrainingPair(*row) for row in rows]

    def record_retrain(self, reason: str, pairs: int, at: float) -> None:
        with self._lock:
            self._db.execute("INSERT INTO retrains VALUES (?, ?, ?)", (at, reason, pairs))

    def last_retrain(self) -> float | None:
        with self._lock:
            value = self._db.execute("SELECT MAX(requested_at) FROM retrains").fetchone()[0]
        return None if value is None else float(value)

    def retrains(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT requested_at, reason, pairs FROM retrains ORDER BY requested_at").fetchall()
        return [{"requested_at": r[0], "reason": r[1], "pairs": r[2]} for r in rows]

    def record_training(self, snapshot_at: float, version: str | None, status: str, reason: str | None) -> None:
        """A finished training run; `snapshot_at` is when its pairs were read (requests before it are covered)."""
        with self._lock:
            self._db.execute("INSERT INTO trainings VALUES (?, ?, ?, ?, ?)",
                             (snapshot_at, time.time(), version, status, reason))

    def trainings(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT snapshot_at, finished_at, version, status, reason FROM trainings "
                                    "ORDER BY finished_at").fetchall()
        return [dict(zip(("snapshot_at", "finished_at", "version", "status", "reason"), r, strict=True)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def pair_lineage(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}@{offset}"
