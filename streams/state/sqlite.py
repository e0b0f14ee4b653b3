"""SQLite files in WAL mode: the embedded home of the query log, the feedback state and the evaluation store.

A failure of the database itself (locked past the busy timeout by another process, an I/O error, a full or
read-only volume) rolls back whatever the failed call began, so the connection is never left inside a dead
transaction, and raises `StateUnavailable` naming the store: callers retry it with backoff like any store outage
(`streams.store_threads`), and the next try starts clean.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from streams.state.database import Schema, TransactionKind
from streams.state.errors import SqliteTooOld, StateUnavailable

#: SQLite's primary result codes of a database that cannot be used now, rather than of a wrong statement: busy or
#: locked (another process holds it past the busy timeout), out of memory, read-only, I/O error, full, cannot open,
#: locking protocol. SQLITE_ERROR (a statement's own error, e.g. a missing column) is a bug, and a corrupt file or
#: one that is not a database never clears by waiting: neither is retried.
UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})


def unavailable(exc: sqlite3.Error) -> bool:
    """Whether `exc` says the database cannot be used now (retry later), not that the statement is wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in UNAVAILABLE_CODES


#: The SQLite the stores' SQL needs (RETURNING, upserts, FILTER, row values).
MIN_SQLITE = (3, 35, 0)


class SqliteDatabase:
    """One connection, used from any thread under one lock. Commits are durable (`synchronous=FULL`): the agents
    commit their Kafka offsets after these writes, so a write acknowledged here must survive a power loss.
    Every write transaction is `BEGIN IMMEDIATE` (SQLite has one writer per file: `serialized` holds anyway)."""

    dialect = "sqlite"

    def __init__(self, path: Path, store: str, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self.store = store
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise SqliteTooOld(f"{store}: SQLite {sqlite3.sqlite_version} is older than the "
                               f"{'.'.join(map(str, MIN_SQLITE))} gristmill needs (use a newer Python build)")
        with self.unavailable_as_typed():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                             timeout=self.busy_timeout_s)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    @contextlib.contextmanager
    def unavailable_as_typed(self) -> Iterator[None]:
        """Turn a failure of the database (not of a statement) into `StateUnavailable`."""
        try:
            yield
        except sqlite3.Error as exc:
            if not unavailable(exc):
                raise
            raise StateUnavailable(self.store, f"{self.store} ({self.path.name}): {exc}") from exc
        except OSError as exc:  # the directory cannot be made or read
            raise StateUnavailable(self.store, f"{self.store} ({self.path}): {exc}") from exc

    def ensure(self, schema: Schema) -> None:
        with self.transaction() as db:
            schema.sqlite(db)

    @contextlib.contextmanager
    def transaction(self, kind: TransactionKind = "serialized") -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` (`BEGIN` to read) ... `COMMIT`; any failure rolls back (reconnecting if even that
        fails)."""
        with self._lock, self.unavailable_as_typed():
            db = self._db or self._connect()
            db.execute("BEGIN" if kind == "read" else "BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                self._abandon(db)
                raise

    def _abandon(self, db: sqlite3.Connection) -> None:
        """Leave a failed transaction: ROLLBACK, or a fresh connection when the old one cannot roll back."""
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            self._db = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement on its own (autocommit); returns the rows it changed."""
        with self._lock, self.unavailable_as_typed():
            db = self._db or self._connect()
            try:
                return db.execute(sql, params).rowcount
            except BaseException:
                self._abandon(db)
                raise

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self.unavailable_as_typed():
            db = self._db or self._connect()
            try:
                return db.execute(sql, params).fetchall()
            except BaseException:
                self._abandon(db)
                raise

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
