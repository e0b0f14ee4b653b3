"""Copy a state store's SQLite file into its PostgreSQL schema (`gristmill state migrate`): idempotent, in batches,
with progress.

Both sides are first brought up to date through the store's own class: the SQLite schema upgrade adds the columns an
older file lacks (so the file must be writable), and the PostgreSQL migrations create the schema. Each table is then
read from one snapshot of the file, in its rowid order, and written `BATCH_ROWS` rows per PostgreSQL transaction,
each row inserted unless its primary key is there already: a second run copies nothing and duplicates nothing, and
an interrupted one resumes. Rows are never deleted or overwritten on PostgreSQL, except that a counter takes the
larger of the two values.

Retrain requests and trainings are keyed by their rowid: SQLite's is kept (`OVERRIDING SYSTEM VALUE`) and the
identity sequence then moves past the largest, so rows recorded later get new ids. The PostgreSQL-only `rowid` of
queries, answers and held feedback is left to its default: rows copied in SQLite's order keep their order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from schemas.errors import GristmillError
from streams.state.database import Database
from streams.state.errors import StateUnavailable
from streams.state.evaluation_store import EvaluationStore
from streams.state.postgres import PostgresDatabase, redacted
from streams.state.query_log import QueryLog
from streams.state.sqlite import SqliteDatabase
from streams.state.state_databases import StateStore
from streams.state.training_pairs import TrainingPairs

#: Rows per PostgreSQL transaction (fewer for a wide table: a statement takes at most `MAX_PARAMETERS`).
BATCH_ROWS = 1000
MAX_PARAMETERS = 65_535


class MissingSource(GristmillError):
    """The store has no SQLite file there (nothing to copy; none is created)."""


class InvalidTarget(GristmillError):
    """The target is not a PostgreSQL URL (`postgresql://` or `postgres://`), or one that cannot be parsed."""


class SchemaMismatch(GristmillError):
    """A column of the SQLite table has no counterpart in PostgreSQL: nothing of that table is copied."""


@dataclass(frozen=True)
class Table:
    """A table to copy: `key` is its PostgreSQL primary key; `keeps_rowid`: that key is the identity `rowid`, which
    takes SQLite's; `on_conflict`: what a row whose key is there already does (by default nothing)."""

    name: str
    key: tuple[str, ...]
    keeps_rowid: bool = False
    on_conflict: str = "DO NOTHING"


@dataclass(frozen=True)
class StoreTables:
    """A store's class (opening it brings its schema up to date on either backend) and the tables to copy."""

    opener: Callable[[Database], object]
    tables: tuple[Table, ...]


#: A counter only grows: the larger of the two values counts.
LARGER_COUNTER = "DO UPDATE SET value = excluded.value WHERE excluded.value > counters.value"

STORES: dict[StateStore, StoreTables] = {
    "query log": StoreTables(QueryLog, (Table("queries", ("query_id",)),)),
    "feedback state": StoreTables(TrainingPairs, (
        Table("pending", ("topic", "partition", "offset")),
        Table("pairs", ("query_id", "doc_id")),
        Table("judgements", ("query_id", "doc_id")),
        Table("counters", ("name",), on_conflict=LARGER_COUNTER),
        Table("retrains", ("rowid",), keeps_rowid=True),
        Table("trainings", ("rowid",), keeps_rowid=True),
    )),
    "evaluation store": StoreTables(EvaluationStore, (
        Table("answers", ("query_id", "arm")),
        Table("judgements", ("query_id", "doc_id")),
        Table("offline", ("version", "measure")),
        Table("experiments", ("id",)),
    )),
}

#: Move a table's identity sequence past its largest rowid (never back: ids handed out already stay used).
ADVANCE_IDENTITY = """SELECT setval(s.sequence, GREATEST(s.top, COALESCE(pg_sequence_last_value(s.sequence), 0)))
    FROM (SELECT pg_get_serial_sequence('{table}', 'rowid')::regclass AS sequence, MAX(rowid) AS top
          FROM {table}) AS s
    WHERE s.top IS NOT NULL"""


@dataclass(frozen=True)
class TableCount:
    """How far the copy of one table is: `done` of its `rows` read, `copied` of those new in PostgreSQL."""

    store: str
    table: str
    rows: int
    done: int = 0
    copied: int = 0

    @property
    def already_there(self) -> int:
        return self.done - self.copied


@dataclass(frozen=True)
class StoreCopied:
    """A store copied: from `source` into PostgreSQL schema `schema`, per table."""

    store: str
    source: Path
    schema: str
    tables: tuple[TableCount, ...]

    @property
    def copied(self) -> int:
        return sum(table.copied for table in self.tables)

    @property
    def already_there(self) -> int:
        return sum(table.already_there for table in self.tables)


Progress = Callable[[TableCount], None]


def _no_progress(count: TableCount) -> None:
    pass


def one_line(message: object) -> str:
    """A message on one line (libpq's span several)."""
    return " ".join(str(message).split())


def require_postgresql_url(url: str) -> None:
    """`InvalidTarget` unless `url` is a `postgresql://` or `postgres://` URL."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise InvalidTarget(f"not a PostgreSQL URL: {redacted(url)} (expected postgresql://user:password@host/db)")


def _scrubbed(message: object, url: str) -> str:
    """`message` on one line, without the password of `url` should it quote it."""
    text = one_line(message)
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    return text.replace(str(password), "***") if password else text


def check_server(url: str, timeout_s: float) -> None:
    """Connect once (at most `timeout_s` per address): `StateUnavailable` with the server's reason when it cannot be
    reached or refuses the login, `InvalidTarget` when `url` cannot be parsed. The password is never in either."""
    require_postgresql_url(url)
    try:
        psycopg.connect(url, connect_timeout=max(1, round(timeout_s)), application_name="gristmill").close()
    except psycopg.OperationalError as exc:
        raise StateUnavailable("PostgreSQL", f"cannot reach PostgreSQL at {redacted(url)}: "
                                             f"{_scrubbed(exc, url)}") from None
    except psycopg.Error as exc:
        raise InvalidTarget(f"invalid PostgreSQL URL {redacted(url)}: {_scrubbed(exc, url)}") from None


def copy_store(store: StateStore, source: Path, url: str, *, namespace: str = "", timeout_s: float = 5.0,
               busy_timeout_s: float = 5.0, progress: Progress = _no_progress) -> StoreCopied:
    """Copy `store` from the SQLite file `source` into its schema in the PostgreSQL database at `url` (prefixed by
    `namespace`, as the workers will use it); `progress` hears of every table's start and every batch.
    `MissingSource` when there is no such file, `StateUnavailable` when either database cannot be used."""
    if not source.is_file():
        raise MissingSource(f"{store}: no {source}")
    tables = STORES[store]
    sqlite = SqliteDatabase(source, store, busy_timeout_s)
    target = PostgresDatabase(url, store, namespace=namespace, pool_size=1, connect_timeout_s=timeout_s)
    try:
        tables.opener(sqlite)  # the SQLite schema upgrade: the columns an older file lacks
        tables.opener(target)  # the PostgreSQL migrations
        with sqlite.transaction("read") as snapshot:
            counts = tuple(_copy_table(store, table, snapshot, target, progress) for table in tables.tables)
        return StoreCopied(store, source, target.schema, counts)
    finally:
        target.close()
        sqlite.close()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _copy_table(store: str, table: Table, source: sqlite3.Connection, target: PostgresDatabase,
                progress: Progress) -> TableCount:
    columns = [row[1] for row in source.execute(f"PRAGMA table_info({_quoted(table.name)})").fetchall()]
    known = {row[0] for row in target.fetchall("SELECT column_name FROM information_schema.columns WHERE "
                                               "table_schema = ? AND table_name = ?", (target.schema, table.name))}
    missing = sorted(set(columns) - known)
    if missing:
        raise SchemaMismatch(f"{store}: table {table.name} of schema {target.schema} lacks column(s) "
                             f"{', '.join(missing)} of the SQLite file")
    copied_columns = (["rowid"] if table.keeps_rowid else []) + columns
    total = int(source.execute(f"SELECT COUNT(*) FROM {_quoted(table.name)}").fetchone()[0])
    count = TableCount(store, table.name, total)
    progress(count)
    batch = max(1, min(BATCH_ROWS, MAX_PARAMETERS // len(copied_columns)))
    select = (f"SELECT rowid, {', '.join(map(_quoted, columns))} FROM {_quoted(table.name)} WHERE rowid > ? "
              "ORDER BY rowid LIMIT ?")
    after = -(2**63)
    while rows := source.execute(select, (after, batch)).fetchall():
        after = rows[-1][0]
        values = [tuple(row) if table.keeps_rowid else tuple(row[1:]) for row in rows]
        with target.transaction("write") as db:
            copied = db.execute(_insert(table, copied_columns, len(values)),
                                [value for row in values for value in row]).rowcount
        count = replace(count, done=count.done + len(rows), copied=count.copied + max(0, copied))
        progress(count)
    if table.keeps_rowid:
        target.execute(ADVANCE_IDENTITY.format(table=table.name))
    return count


def _insert(table: Table, columns: Sequence[str], rows: int) -> str:
    """INSERT of `rows` rows that leaves a row whose key is there already to `table.on_conflict`."""
    row = "(" + ", ".join("?" * len(columns)) + ")"
    overriding = " OVERRIDING SYSTEM VALUE" if table.keeps_rowid else ""
    return (f"INSERT INTO {_quoted(table.name)} ({', '.join(map(_quoted, columns))}){overriding} VALUES "
            f"{', '.join([row] * rows)} ON CONFLICT ({', '.join(map(_quoted, table.key))}) {table.on_conflict}")

