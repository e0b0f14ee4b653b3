"""The database a state store (query log, feedback state, evaluation store) keeps its tables in: an SQLite file
(`streams.state.sqlite`, the embedded default) or a PostgreSQL schema (`streams.state.postgres`, production).

Each store is written once, in SQL both understand (`?` placeholders, `INSERT ... ON CONFLICT`, `RETURNING`, row
values), and declares its schema per dialect. A failure of the database itself (not of a statement) raises
`StateUnavailable` naming the store, and whatever the failed call began is rolled back: callers retry it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: How a transaction holds its store: `read` sees one snapshot; `write` writes rows of its own (an insert that
#: ignores or overwrites a conflict, a conditional update); `serialized` reads, decides, then writes (a counter, a
#: retrain decision, an experiment start) and so runs one at a time per store, across every worker; `maintenance`
#: writes like `write` but may take as long as it needs (pruning: no statement timeout).
TransactionKind = Literal["read", "write", "serialized", "maintenance"]

#: The state stores, by the name errors and `/health` give them.
StateStore = Literal["query log", "feedback state", "evaluation store"]

#: A LIMIT that keeps every row (SQLite has no `LIMIT ALL`; `LIMIT ? OFFSET ?` with this is portable).
EVERY_ROW = 2**63 - 1


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """One transaction's statements (`?` placeholders)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...


@dataclass(frozen=True)
class Schema:
    """A store's tables per dialect. `sqlite` brings a file up to date (idempotent; run at every open);
    `postgresql` are versioned migrations, applied once each, in order, under a lock (`streams.state.postgres`).
    A released migration is never edited: a change is a new one at the end."""

    sqlite: Callable[[Connection], None]
    postgresql: Sequence[str] = field(default_factory=tuple)


class Database(Protocol):
    """Where one store keeps its tables. `dialect` is "sqlite" or "postgresql"; `store` names it in errors."""

    store: str
    dialect: str

    def ensure(self, schema: Schema) -> None:
        """Create or migrate the store's tables."""

    def transaction(self, kind: TransactionKind = "serialized") -> AbstractContextManager[Connection]:
        """BEGIN ... COMMIT; any failure rolls back."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in a transaction of its own; returns the rows it changed."""

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def close(self) -> None: ...



def insert_rows(db: Database, head: str, rows: Sequence[Sequence[Any]], tail: str = "", *, key_columns: int,
                per_statement: int = 200) -> None:
    """`head` ("INSERT INTO t (a, b) VALUES") with the rows as one multi-row statement, then `tail` (an
    "ON CONFLICT ..." clause): one round trip, atomic by itself. More than `per_statement` rows are written by
    several statements in one transaction. Rows go in the order of their key (the first `key_columns`): two
    writers of overlapping keys lock them in one order, so they never deadlock."""
    if not rows:
        return
    rows = sorted(rows, key=lambda row: tuple(row[:key_columns]))
    placeholders = "(" + ", ".join("?" * len(rows[0])) + ")"
    statements = []
    for start in range(0, len(rows), per_statement):
        part = rows[start:start + per_statement]
        statements.append((f"{head} {', '.join([placeholders] * len(part))} {tail}",
                           [value for row in part for value in row]))
    if len(statements) == 1:
        db.execute(*statements[0])
        return
    with db.transaction("write") as connection:
        for statement, params in statements:
            connection.execute(statement, params)
