"""Durable log of every answered query and its response (SQLite or PostgreSQL): joined by feedback, replayed by
evals."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.state.database import EVERY_ROW, Connection, Database, Schema, insert_rows
from streams.state.sqlite import SqliteDatabase


@dataclass(frozen=True)
class LoggedQuery:
    query_id: str
    query: dict[str, Any]
    response: dict[str, Any]
    answered_at: float
    via: str


def bounded(entry: LoggedQuery, text_chars: int) -> LoggedQuery:
    """The entry with its query text and hit texts cut to `text_chars` (the log keeps bounded text)."""
    def cut(text: object) -> object:
        return text[:text_chars] + "…" if isinstance(text, str) and len(text) > text_chars else text

    query = {**entry.query, "text": cut(entry.query.get("text"))}
    hits = [{**hit, "text": cut(hit.get("text"))} for hit in entry.response.get("hits") or []]
    return LoggedQuery(entry.query_id, query, {**entry.response, "hits": hits}, entry.answered_at, entry.via)


class QueryLog:
    """One row per query_id, its first answer: a query answered again (re-delivered after a rebalance or a stop)
    keeps the answer logged first, the one its client got first (feedback judges what the client saw). Texts are
    kept up to `text_chars`, and `prune` bounds the log by age and rows."""

    def __init__(self, database: Database | Path, text_chars: int = 2_000, busy_timeout_s: float = 5.0) -> None:
        """`database`: where the log lives (a path: an SQLite file there)."""
        self.text_chars = text_chars
        self._db = (SqliteDatabase(database, "query log", busy_timeout_s) if isinstance(database, Path)
                    else database)
        self._db.ensure(SCHEMA)

    def record(self, entries: Sequence[LoggedQuery]) -> None:
        entries = [bounded(e, self.text_chars) for e in entries]
        rows = [(e.query_id, json.dumps(e.query, default=str), json.dumps(e.response, default=str), e.answered_at,
                 e.via, e.response.get("model_version", ""), e.response.get("index_version", ""))
                for e in entries]
        insert_rows(self._db, "INSERT INTO queries (query_id, query, response, answered_at, via, model_version, "
                              "index_version) VALUES", rows, "ON CONFLICT (query_id) DO NOTHING", key_columns=1)

    def get(self, query_id: str) -> LoggedQuery | None:
        row = self._db.fetchone("SELECT query_id, query, response, answered_at, via FROM queries WHERE query_id = ?",
                                (query_id,))
        return None if row is None else LoggedQuery(row[0], json.loads(row[1]), json.loads(row[2]), row[3], row[4])

    def since(self, answered_after: float = 0.0, limit: int = 10_000) -> Iterator[LoggedQuery]:
        rows = self._db.fetchall("SELECT query_id, query, response, answered_at, via FROM queries "
                                 "WHERE answered_at > ? ORDER BY answered_at, rowid LIMIT ?", (answered_after, limit))
        for row in rows:
            yield LoggedQuery(row[0], json.loads(row[1]), json.loads(row[2]), row[3], row[4])

    def recent(self, limit: int = 20) -> list[LoggedQuery]:
        """The latest answered queries, newest first."""
        rows = self._db.fetchall("SELECT query_id, query, response, answered_at, via FROM queries "
                                 "ORDER BY answered_at DESC, rowid DESC LIMIT ?", (limit,))
        return [LoggedQuery(r[0], json.loads(r[1]), json.loads(r[2]), r[3], r[4]) for r in rows]

    def prune(self, max_rows: int, max_age_s: float, now: float) -> int:
        """Delete entries older than `max_age_s` and the oldest beyond `max_rows`; returns how many went."""
        with self._db.transaction("maintenance") as db:
            aged = db.execute("DELETE FROM queries WHERE answered_at < ?", (now - max_age_s,)).rowcount
            return aged + db.execute("DELETE FROM queries WHERE query_id IN (SELECT query_id FROM queries "
                                     "ORDER BY answered_at DESC LIMIT ? OFFSET ?)", (EVERY_ROW, max_rows)).rowcount

    def count(self) -> int:
        return int(self._db.fetchone("SELECT COUNT(*) FROM queries")[0])

    def close(self) -> None:
        self._db.close()


def _sqlite_schema(db: Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS queries (query_id TEXT PRIMARY KEY, query TEXT NOT NULL, "
               "response TEXT NOT NULL, answered_at REAL NOT NULL, via TEXT NOT NULL, "
               "model_version TEXT NOT NULL, index_version TEXT NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS queries_answered_at ON queries (answered_at)")


SCHEMA = Schema(sqlite=_sqlite_schema, postgresql=(
    # 1: the log (looked up by query_id: its primary key; read and pruned by time; `rowid` orders answers of one
    # instant by the order they were written in, as SQLite's does)
    """CREATE TABLE queries (query_id TEXT PRIMARY KEY, query TEXT NOT NULL, response TEXT NOT NULL,
           answered_at DOUBLE PRECISION NOT NULL, via TEXT NOT NULL, model_version TEXT NOT NULL,
           index_version TEXT NOT NULL, rowid BIGINT GENERATED ALWAYS AS IDENTITY);
       CREATE INDEX queries_answered_at ON queries (answered_at, rowid);""",
))
