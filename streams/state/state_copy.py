"""Copy a state store's SQLite file into its PostgreSQL schema (`gristmill state migrate`): in batches, with
progress, into a schema that holds nothing but what earlier copies from the same file put there.

Both sides are first brought up to date through the store's own class: the SQLite schema upgrade adds the columns an
older file lacks (so the file must be writable), and the PostgreSQL migrations create the schema. Each table is then
read from one snapshot of the file, in its rowid order, and written `BATCH_ROWS` rows per PostgreSQL transaction,
each row inserted unless its primary key is there already: a second run copies nothing and duplicates nothing, and
an interrupted one resumes. Rows are never deleted or overwritten on PostgreSQL, except that a counter takes the
larger of the two values.

Only a copy, never a merge. Retrain requests and trainings are keyed by their rowid: SQLite's is kept (`OVERRIDING
SYSTEM VALUE`) and the identity sequence then moves past the largest, so rows recorded later get new ids. Rows
written to PostgreSQL by anyone else (workers started on it before the migration) would take those same ids, and a
row of the file would then be "already there" while it is not: lost. So each schema records which file its rows
came from, in the copy's own table `state_copies` (made here, not a store migration): one row per source file and
table, counting the rows the copies from that file inserted, in the transaction that inserts them. A copy goes
ahead only when every table of the schema holds exactly the rows the copies from this file put there (none, for a
first copy into an empty schema): otherwise `TargetDiverged`, and nothing is written. Counted again after the copy,
a difference means something wrote there meanwhile (workers running): `TargetDiverged` too.

The file is named by an id the first copy writes into it (table `gristmill_copy_source`) together with its inode
number. Its path is not the identity: the same file is /shared/feedback.sqlite3 in the compose service and another
path on the host (a resume from either is the same source), and another file can come to lie at the same path. The
id survives a move or a mount elsewhere; the inode tells the file from a copy of it (a backup restored, a file
carried to another volume: each may have gone on from the point it was taken, with rowids of its own). The device
number is left out: it changes with the mount or the boot (device-mapper, btrfs) while the file does not. The path
is recorded beside them for messages.

The PostgreSQL-only `rowid` of queries, answers and held feedback is left to its default: rows copied in SQLite's
order keep their order.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from schemas.errors import GristmillError
from streams.state.database import Database, StateStore
from streams.state.errors import StateUnavailable
from streams.state.evaluation_store import EvaluationStore
from streams.state.postgres import PostgresDatabase, redacted
from streams.state.query_log import QueryLog
from streams.state.sqlite import SqliteDatabase
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


class TargetDiverged(GristmillError):
    """The store's PostgreSQL schema holds rows that copies from this SQLite file did not put there (workers wrote
    to it, or another file was copied into it), or lacks some they did: copying into it could lose rows of the file
    (their keys taken by others) or mix two histories. Migrate into an empty schema, with the workers stopped."""


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


#: The copy's own table in each store's schema: the rows the copies from each source file inserted, per table.
COPIES_TABLE = "state_copies"
CREATE_COPIES = f"""CREATE TABLE IF NOT EXISTS {COPIES_TABLE} (source TEXT NOT NULL, table_name TEXT NOT NULL,
    path TEXT NOT NULL, rows BIGINT NOT NULL, copied_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (source, table_name))"""
RECORD_COPIED = f"""INSERT INTO {COPIES_TABLE} (source, table_name, path, rows, copied_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (source, table_name) DO UPDATE SET rows = {COPIES_TABLE}.rows + excluded.rows,
    path = excluded.path, copied_at = excluded.copied_at"""
#: Tables of a store's schema that are not the store's rows.
NOT_STORE_TABLES = ("schema_migrations", COPIES_TABLE)

#: The SQLite file's own table holding the id that names it as a copy source (written by the first copy from it).
SOURCE_TABLE = "gristmill_copy_source"


@dataclass(frozen=True)
class Source:
    """A SQLite file as a copy source: `key` (its id and inode) names it in `state_copies`; `path` is shown."""

    key: str | None  # None: no copy was ever made from it
    path: Path


def source_of(path: Path, *, create: bool, busy_timeout_s: float = 5.0) -> Source:
    """The SQLite file at `path` as a copy source; `create` writes its id when it has none yet (otherwise nothing
    is written). `sqlite3.Error` when it cannot be read."""
    resolved = path.resolve()
    with contextlib.closing(sqlite3.connect(str(resolved), timeout=busy_timeout_s, isolation_level=None)) as db:

        def current() -> str | None:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                              (SOURCE_TABLE,)).fetchone():
                return None
            row = db.execute(f"SELECT id FROM {SOURCE_TABLE} ORDER BY rowid LIMIT 1").fetchone()
            return str(row[0]) if row else None

        found = current()
        if found is None and create:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"CREATE TABLE IF NOT EXISTS {SOURCE_TABLE} (id TEXT NOT NULL, created_at REAL NOT NULL)")
                found = current()
                if found is None:
                    found = uuid.uuid4().hex
                    db.execute(f"INSERT INTO {SOURCE_TABLE} VALUES (?, ?)", (found, time.time()))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
    return Source(f"{found}/inode {resolved.stat().st_ino}" if found else None, resolved)


@dataclass(frozen=True)
class Holding:
    """A table of a store's schema: the rows it `holds`, and how many of them copies from the source `copied`."""

    table: str
    holds: int
    copied: int


def holdings(db: Any, schema: str, source: Source) -> list[Holding]:
    """Per table of `schema` (the store's, not `NOT_STORE_TABLES`), through `db` (a connection or transaction of the
    store): what it holds, and what the copies from `source` put there. One statement, one snapshot: a copy
    committing meanwhile is counted on both sides or on neither. A schema not made yet holds nothing."""
    tables = [name for (name,) in db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = ? ORDER BY tablename", (schema,)).fetchall()
        if name not in NOT_STORE_TABLES]
    if not tables:
        return []
    counts = " UNION ALL ".join(f"SELECT {_literal(name)} AS name, count(*) AS holds FROM "
                                f"{_quoted(schema)}.{_quoted(name)}" for name in tables)
    copies_exist = db.execute("SELECT to_regclass(?) IS NOT NULL",
                              (f"{_quoted(schema)}.{COPIES_TABLE}",)).fetchone()[0]
    if copies_exist and source.key is not None:
        statement = (f"SELECT held.name, held.holds, COALESCE(copies.rows, 0) FROM ({counts}) AS held LEFT JOIN "
                     f"{_quoted(schema)}.{COPIES_TABLE} AS copies ON copies.table_name = held.name AND "
                     "copies.source = ?")
        rows = db.execute(statement, (source.key,)).fetchall()
    else:
        rows = db.execute(f"SELECT held.name, held.holds, 0 FROM ({counts}) AS held").fetchall()
    return sorted((Holding(str(name), int(holds), int(copied)) for name, holds, copied in rows),
                  key=lambda held: held.table)


def diverged(store: str, schema: str, source: Source, found: list[Holding], *, during: bool = False) -> None:
    """`TargetDiverged` unless every table holds exactly what copies from `source` put there."""
    differing = [held for held in found if held.holds != held.copied]
    if not differing:
        return
    details = "; ".join(f"{held.table}: {held.holds} rows, {held.copied or 'none'} copied from it"
                        for held in differing[:4]) + ("; ..." if len(differing) > 4 else "")
    if during:
        raise TargetDiverged(f"{store}: the PostgreSQL state was written to while it was copied from {source.path} "
                             f"(schema {schema}: {details}): stop the workers, then migrate into an empty database")
    raise TargetDiverged(f"{store}: the PostgreSQL state already holds data not copied from {source.path} (schema "
                         f"{schema}: {details}): migrate into an empty database (stop the workers first, then drop "
                         f"schema {schema} or use a new database)")


def check_target(store: StateStore, source: Path, url: str, *, namespace: str = "", timeout_s: float = 5.0,
                 busy_timeout_s: float = 5.0) -> None:
    """Whether `copy_store` would copy `source` into its schema, writing nothing on either side: `TargetDiverged`
    when the schema holds rows not copied from that file, `MissingSource` when there is no such file, and
    `StateUnavailable` when either database cannot be used. (`copy_store` checks again, under the store's lock.)"""
    if not source.is_file():
        raise MissingSource(f"{store}: no {source}")
    named = source_of(source, create=False, busy_timeout_s=busy_timeout_s)
    target = PostgresDatabase(url, store, namespace=namespace, pool_size=1, connect_timeout_s=timeout_s)
    try:
        with target.transaction("read") as db:
            diverged(store, target.schema, named, holdings(db, target.schema, named))
    finally:
        target.close()


def copy_store(store: StateStore, source: Path, url: str, *, namespace: str = "", timeout_s: float = 5.0,
               busy_timeout_s: float = 5.0, progress: Progress = _no_progress) -> StoreCopied:
    """Copy `store` from the SQLite file `source` into its schema in the PostgreSQL database at `url` (prefixed by
    `namespace`, as the workers will use it); `progress` hears of every table's start and every batch.
    `MissingSource` when there is no such file, `TargetDiverged` when the schema holds rows not copied from that
    file (before anything is copied) or was written to during the copy, `StateUnavailable` when either database
    cannot be used."""
    if not source.is_file():
        raise MissingSource(f"{store}: no {source}")
    tables = STORES[store]
    sqlite = SqliteDatabase(source, store, busy_timeout_s)
    target = PostgresDatabase(url, store, namespace=namespace, pool_size=1, connect_timeout_s=timeout_s)
    try:
        tables.opener(sqlite)  # the SQLite schema upgrade: the columns an older file lacks
        tables.opener(target)  # the PostgreSQL migrations
        with sqlite.unavailable_as_typed():  # busy past the timeout: unavailable, as any SQLite outage
            named = source_of(source, create=True, busy_timeout_s=busy_timeout_s)
        with target.transaction("serialized") as db:  # the store's lock: two copies never create the table at once
            db.execute(CREATE_COPIES)
            diverged(store, target.schema, named, holdings(db, target.schema, named))
        with sqlite.transaction("read") as snapshot:
            counts = tuple(_copy_table(store, table, snapshot, target, named, progress) for table in tables.tables)
        with target.transaction("read") as db:
            diverged(store, target.schema, named, holdings(db, target.schema, named), during=True)
        return StoreCopied(store, source, target.schema, counts)
    finally:
        target.close()
        sqlite.close()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _copy_table(store: str, table: Table, source: sqlite3.Connection, target: PostgresDatabase, named: Source,
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
            # one row back per row inserted or updated (a counter): `xmax = 0` on a row this statement inserted
            written = db.execute(_insert(table, copied_columns, len(values)),
                                 [value for row in values for value in row]).fetchall()
            inserted = sum(1 for (new,) in written if new)
            if inserted:  # in the same transaction: what the schema holds and what it says it copied stay equal
                db.execute(RECORD_COPIED, (named.key, table.name, str(named.path), inserted, time.time()))
        count = replace(count, done=count.done + len(rows), copied=count.copied + len(written))
        progress(count)
    if table.keeps_rowid:
        target.execute(ADVANCE_IDENTITY.format(table=table.name))
    return count


def _insert(table: Table, columns: Sequence[str], rows: int) -> str:
    """INSERT of `rows` rows that leaves a row whose key is there already to `table.on_conflict`, returning for
    each row written whether it is new."""
    row = "(" + ", ".join("?" * len(columns)) + ")"
    overriding = " OVERRIDING SYSTEM VALUE" if table.keeps_rowid else ""
    return (f"INSERT INTO {_quoted(table.name)} ({', '.join(map(_quoted, columns))}){overriding} VALUES "
            f"{', '.join([row] * rows)} ON CONFLICT ({', '.join(map(_quoted, table.key))}) {table.on_conflict} "
            "RETURNING (xmax = 0)")
