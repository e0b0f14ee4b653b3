"""Durable feedback state (SQLite or PostgreSQL): feedback waiting for its query, training pairs, and retrain
history.

Several workers share it (the shared volume, or one database). Held feedback is settled by one worker at a time: a
worker claims the rows it settles (a lease; a worker that dies mid-settle lets it lapse and another takes over; on
PostgreSQL rows another worker is claiming are skipped, not waited for), so expired feedback becomes one dead
letter, not one per worker. Judging, the pairs counter and retrain decisions read, decide and write in
`serialized` transactions: one worker at a time per store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.state.database import EVERY_ROW, Connection, Database, Schema, insert_rows
from streams.state.sqlite import SqliteDatabase


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


@dataclass(frozen=True)
class Judgement:
    """An accepted judgement (-1/0/1) of one document for one query, joined with the query's logged response.

    `text` is the judged document's text, `served` the documents the query was served, best first, as (doc_id,
    text): what a positive infers hard negatives from. `topic`/`partition`/`offset` place the feedback record: of
    two judgements of one (query, document) from one partition the later offset counts, and a re-delivered one
    changes nothing."""

    query_id: str
    query: str
    doc_id: str
    text: str
    judgement: int
    topic: str
    partition: int
    offset: int
    judged_at: float
    served: tuple[tuple[str, str], ...] = ()

    @property
    def lineage(self) -> str:
        return pair_lineage(self.topic, self.partition, self.offset)


def inferred_negatives(served: Sequence[tuple[str, str]], positives: Mapping[str, str], explicit: Collection[str]
                       ) -> dict[str, tuple[str, list[str]]]:
    """The hard negatives a query's positives (doc_id -> lineage) infer from its served documents: every served
    document ranked below a positive that has no explicit judgement of its own, with its text and the lineages of
    the positives ranked above it (best first)."""
    inferred: dict[str, tuple[str, list[str]]] = {}
    above: list[str] = []
    for doc_id, text in served:
        if doc_id in positives:
            above.append(positives[doc_id])
        elif above and doc_id not in explicit:
            inferred[doc_id] = (text, list(above))
    return inferred


def _key(p: PendingFeedback) -> tuple[str, int, int]:
    return p.topic, p.partition, p.offset


@dataclass(frozen=True)
class RecordedRetrain:
    """A retrain request the policy recorded: published to `retrain` once `retrain_published` says so."""

    row: int
    reason: str
    requested_at: float
    pairs: int


class TrainingPairs:
    """Pairs are keyed by (query_id, doc_id): a re-delivered or repeated judgement overwrites, never duplicates.
    Pairs follow the latest judgement of each (query, document) (`judge`). `sequence()` counts every change to the
    pairs (what a retrain would train on has changed since)."""

    def __init__(self, database: Database | Path, busy_timeout_s: float = 5.0) -> None:
        """`database`: where the state lives (a path: an SQLite file there)."""
        self._db = (SqliteDatabase(database, "feedback state", busy_timeout_s) if isinstance(database, Path)
                    else database)
        self._db.ensure(SCHEMA)

    # held feedback

    def hold(self, pending: Sequence[PendingFeedback]) -> None:
        rows = [(p.topic, p.partition, p.offset, p.key, p.value, p.query_id, p.received_at) for p in pending]
        insert_rows(self._db, 'INSERT INTO pending (topic, partition, "offset", key, value, query_id, received_at) '
                              "VALUES", rows, 'ON CONFLICT (topic, partition, "offset") DO NOTHING', key_columns=3)

    def held(self, now: float | None = None) -> list[PendingFeedback]:
        """Feedback still held and not claimed by a worker settling it now."""
        rows = self._db.fetchall('SELECT topic, partition, "offset", key, value, query_id, received_at FROM pending '
                                 "WHERE claimed_until < ? ORDER BY received_at, rowid",
                                 (time.time() if now is None else now,))
        return [PendingFeedback(*row) for row in rows]

    def claim(self, pending: Sequence[PendingFeedback], now: float, lease_s: float
              ) -> tuple[str, list[PendingFeedback]]:
        """Those of `pending` this call may settle, with the claim's token: still held and not claimed by another
        settle (of any worker, this one included) whose claim has not lapsed (after `lease_s`). They stay claimed
        until `release`d or `unclaim`ed with the token."""
        token = uuid.uuid4().hex
        by_key = {_key(p): p for p in pending}
        keys = sorted(by_key)  # rows locked in key order: concurrent claims never deadlock
        # a row another worker is claiming right now is skipped, not waited for (its claim decides it)
        claimed: set[tuple[str, int, int]] = set()
        with self._db.transaction("write") as db:
            for start in range(0, len(keys), 200):
                part = keys[start:start + 200]
                rows = db.execute(
                    'UPDATE pending SET claimed_until = ?, claimed_by = ? WHERE (topic, partition, "offset") IN '
                    '(SELECT topic, partition, "offset" FROM pending WHERE (topic, partition, "offset") IN '
                    f"(VALUES {', '.join(['(?, ?, ?)'] * len(part))}) AND claimed_until < ? "
                    f'ORDER BY topic, partition, "offset"{_skip_locked(self._db)}) '
                    'RETURNING topic, partition, "offset"',
                    (now + lease_s, token, *[value for key in part for value in key], now)).fetchall()
                claimed.update((str(topic), int(partition), int(offset)) for topic, partition, offset in rows)
        return token, [by_key[key] for key in keys if key in claimed]

    def unclaim(self, token: str, pending: Sequence[PendingFeedback]) -> None:
        """Hand feedback this claim holds back to the hold (it still waits for its query)."""
        with self._db.transaction("write") as db:
            db.executemany('UPDATE pending SET claimed_until = 0 WHERE topic = ? AND partition = ? AND "offset" = ? '
                           "AND claimed_by = ?", [(*_key(p), token) for p in sorted(pending, key=_key)])

    def release(self, token: str, pending: Sequence[PendingFeedback]) -> None:
        """Settled by this claim: out of the hold."""
        with self._db.transaction("write") as db:
            db.executemany('DELETE FROM pending WHERE topic = ? AND partition = ? AND "offset" = ? AND claimed_by = ?',
                           [(*_key(p), token) for p in sorted(pending, key=_key)])

    # training pairs

    def add(self, pairs: Sequence[TrainingPair], now: float | None = None) -> None:
        """Insert or overwrite; an explicit judgement always wins over a pair inferred from served hits."""
        if not pairs:
            return
        stamp = time.time() if now is None else now
        with self._db.transaction() as db:
            sequence = self._sequence(db)
            for p in pairs:
                row = (p.query_id, p.doc_id, p.query, p.text, p.kind, p.source, p.feedback_offset, stamp, sequence + 1)
                conflict = REPLACE_PAIR if p.source == "feedback" else "DO NOTHING"
                sequence += db.execute("INSERT INTO pairs (query_id, doc_id, query, text, kind, source, "
                                       "feedback_offset, created_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                                       f"ON CONFLICT (query_id, doc_id) {conflict}", row).rowcount
            self._set_sequence(db, sequence)

    def judge(self, judgements: Sequence[Judgement]) -> list[TrainingPair]:
        """Apply accepted judgements in order; returns the pairs written. Each (query, document) follows its latest
        judgement: a positive or negative is its explicit pair, a neutral one removes it; the hard negatives of
        the query are those its current positives infer (a withdrawn positive's go with it, an explicit judgement
        overrides an inferred one). A judgement older (same partition, lower offset) than the one applied, or the
        same one re-delivered, changes nothing."""
        written: list[TrainingPair] = []
        if not judgements:
            return written
        with self._db.transaction() as db:
            sequence = self._sequence(db)
            for j in judgements:
                last = db.execute('SELECT topic, partition, "offset" FROM judgements WHERE query_id = ? AND '
                                  "doc_id = ?", (j.query_id, j.doc_id)).fetchone()
                if last is not None and (last[0], last[1]) == (j.topic, j.partition) and last[2] >= j.offset:
                    continue
                db.execute('INSERT INTO judgements (query_id, doc_id, judgement, topic, partition, "offset", '
                           "judged_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (query_id, doc_id) DO UPDATE SET "
                           'judgement = excluded.judgement, topic = excluded.topic, partition = excluded.partition, '
                           '"offset" = excluded."offset", judged_at = excluded.judged_at',
                           (j.query_id, j.doc_id, j.judgement, j.topic, j.partition, j.offset, j.judged_at))
                if j.judgement == 0:
                    sequence += db.execute("DELETE FROM pairs WHERE query_id = ? AND doc_id = ? AND source = "
                                           "'feedback'", (j.query_id, j.doc_id)).rowcount
                else:
                    pair = TrainingPair(j.query_id, j.query, j.doc_id, j.text,
                                        "positive" if j.judgement > 0 else "negative", "feedback", j.lineage)
                    sequence = self._write_pair(db, pair, j.judged_at, sequence)
                    written.append(pair)
                sequence = self._infer(db, j, sequence, written)
            self._set_sequence(db, sequence)
        return written

    def _infer(self, db: Any, j: Judgement, sequence: int, written: list[TrainingPair]) -> int:
        """Bring the query's hard negatives in line with its current positives; returns the new sequence."""
        rows = db.execute("SELECT doc_id, kind, source, feedback_offset FROM pairs WHERE query_id = ?",
                          (j.query_id,)).fetchall()
        positives = {doc: lineage for doc, kind, source, lineage in rows if (source, kind) == ("feedback", "positive")}
        judged = db.execute("SELECT doc_id FROM judgements WHERE query_id = ?", (j.query_id,)).fetchall()
        # every document a judgement names (a neutral one included) is never an inferred negative
        explicit = {doc for doc, _, source, _ in rows if source == "feedback"} | {doc for (doc,) in judged}
        current = {doc: lineage for doc, _, source, lineage in rows if source == "served"}
        wanted = inferred_negatives(j.served, positives, explicit)
        for doc, lineage in current.items():
            if doc not in wanted or lineage not in wanted[doc][1]:
                sequence += db.execute("DELETE FROM pairs WHERE query_id = ? AND doc_id = ?",
                                       (j.query_id, doc)).rowcount
        for doc, (text, lineages) in wanted.items():
            if current.get(doc) not in lineages:
                pair = TrainingPair(j.query_id, j.query, doc, text, "negative", "served", lineages[0])
                sequence = self._write_pair(db, pair, j.judged_at, sequence)
                written.append(pair)
        return sequence

    @staticmethod
    def _write_pair(db: Any, p: TrainingPair, stamp: float, sequence: int) -> int:
        db.execute("INSERT INTO pairs (query_id, doc_id, query, text, kind, source, feedback_offset, created_at, "
                   f"seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (query_id, doc_id) {REPLACE_PAIR}",
                   (p.query_id, p.doc_id, p.query, p.text, p.kind, p.source, p.feedback_offset, stamp, sequence + 1))
        return sequence + 1

    @staticmethod
    def _set_sequence(db: Any, sequence: int) -> None:
        db.execute("INSERT INTO counters VALUES ('pairs', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                   (sequence,))

    @staticmethod
    def _sequence(db: Any) -> int:
        row = db.execute("SELECT value FROM counters WHERE name = 'pairs'").fetchone()
        return 0 if row is None else int(row[0])

    def sequence(self) -> int:
        """How many times pairs were added, overwritten or withdrawn, ever (never decreases, pruning included); each
        pair carries the sequence number of its latest change."""
        with self._db.transaction("read") as db:
            return self._sequence(db)

    def pairs(self, since: float = 0.0) -> list[TrainingPair]:
        rows = self._db.fetchall("SELECT query_id, query, doc_id, text, kind, source, feedback_offset FROM pairs "
                                 "WHERE created_at > ? ORDER BY created_at, query_id, doc_id", (since,))
        return [TrainingPair(*row) for row in rows]

    def count(self, kind: str | None = None, since: float = 0.0) -> int:
        query, params = "SELECT COUNT(*) FROM pairs WHERE created_at > ?", [since]
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind)  # type: ignore[arg-type]
        return int(self._db.fetchone(query, params)[0])

    def for_query(self, query_id: str) -> list[TrainingPair]:
        rows = self._db.fetchall("SELECT query_id, query, doc_id, text, kind, source, feedback_offset FROM pairs "
                                 "WHERE query_id = ? ORDER BY kind DESC, doc_id", (query_id,))
        return [TrainingPair(*row) for row in rows]

    def prune(self, max_rows: int, max_age_s: float, now: float) -> int:
        """Drop pairs older than `max_age_s` and the oldest beyond `max_rows` (the models trained on them keep their
        lineage in their manifests); returns how many went. The latest judgements behind them are kept as long."""
        with self._db.transaction("maintenance") as db:
            db.execute("DELETE FROM judgements WHERE judged_at < ?", (now - max_age_s,))
            db.execute("DELETE FROM judgements WHERE (query_id, doc_id) IN (SELECT query_id, doc_id FROM judgements "
                       "ORDER BY judged_at DESC LIMIT ? OFFSET ?)", (EVERY_ROW, max_rows))
            aged = db.execute("DELETE FROM pairs WHERE created_at < ?", (now - max_age_s,)).rowcount
            return aged + db.execute("DELETE FROM pairs WHERE (query_id, doc_id) IN (SELECT query_id, doc_id FROM "
                                     "pairs ORDER BY created_at DESC LIMIT ? OFFSET ?)", (EVERY_ROW, max_rows)).rowcount

    # retrains and trainings

    def record_retrain_if(self, reason: str, at: float, min_interval_s: float, min_new_positive: int = 0,
                          min_new_pairs: int = 0, claim_s: float = 30.0) -> RecordedRetrain | None:
        """Record a retrain request, not yet published and claimed for publishing by the caller for `claim_s`,
        when the last one is at least `min_interval_s` old and enough pairs changed since it (counted by sequence,
        not by clocks); None when it does not fire. One transaction: of several workers deciding at once, one
        fires."""
        with self._db.transaction() as db:
            last = db.execute("SELECT requested_at, pairs_sequence FROM retrains ORDER BY rowid DESC LIMIT 1"
                              ).fetchone()
            if last is not None and at - last[0] < min_interval_s:
                return None
            since = last[1] if last is not None else 0
            new_pairs, new_positive = db.execute("SELECT COUNT(*), COUNT(*) FILTER (WHERE kind = 'positive') FROM "
                                                 "pairs WHERE seq > ?", (since,)).fetchone()
            if new_positive < min_new_positive or new_pairs < max(1, min_new_pairs):
                return None
            row = db.execute("INSERT INTO retrains (requested_at, reason, pairs, pairs_sequence, published, "
                             "publish_claimed_until) VALUES (?, ?, ?, ?, 0, ?) RETURNING rowid",
                             (at, reason, new_pairs, self._sequence(db), at + claim_s)).fetchone()[0]
            return RecordedRetrain(int(row), reason, at, int(new_pairs))

    def retrain_published(self, row: int) -> None:
        """The request recorded as `row` is on the `retrain` topic."""
        self._db.execute("UPDATE retrains SET published = 1 WHERE rowid = ?", (row,))

    def claim_unpublished_retrains(self, now: float, claim_s: float = 30.0) -> list[RecordedRetrain]:
        """Requests never published whose publishing claim lapsed (the worker that recorded or last claimed one
        stopped, or its broker was away): claimed by the caller for `claim_s`, in one transaction, so that one
        worker at a time publishes each."""
        with self._db.transaction("write") as db:
            rows = db.execute("SELECT rowid, reason, requested_at, pairs FROM retrains WHERE published = 0 "
                              f"AND publish_claimed_until < ? ORDER BY rowid{_skip_locked(self._db)}",
                              (now,)).fetchall()
            db.executemany("UPDATE retrains SET publish_claimed_until = ? WHERE rowid = ?",
                           [(now + claim_s, r[0]) for r in rows])
        return [RecordedRetrain(int(r[0]), r[1], float(r[2]), int(r[3])) for r in rows]

    def last_retrain(self) -> float | None:
        value = self._db.fetchone("SELECT MAX(requested_at) FROM retrains")[0]
        return None if value is None else float(value)

    def retrains(self) -> list[dict[str, Any]]:
        rows = self._db.fetchall("SELECT requested_at, reason, pairs FROM retrains ORDER BY requested_at")
        return [{"requested_at": r[0], "reason": r[1], "pairs": r[2]} for r in rows]

    def record_training(self, snapshot_at: float, version: str | None, status: str, reason: str | None,
                        pairs_sequence: int | None = None) -> None:
        """A finished training run; `pairs_sequence` is `sequence()` when its pairs were read (a request that finds
        no change since has nothing new to train on)."""
        self._db.execute("INSERT INTO trainings (snapshot_at, finished_at, version, status, reason, pairs_sequence) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (snapshot_at, time.time(), version, status, reason,
                                                       pairs_sequence))

    def trainings(self) -> list[dict[str, Any]]:
        rows = self._db.fetchall("SELECT snapshot_at, finished_at, version, status, reason, pairs_sequence "
                                 "FROM trainings ORDER BY finished_at")
        keys = ("snapshot_at", "finished_at", "version", "status", "reason", "pairs_sequence")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def close(self) -> None:
        self._db.close()


def _skip_locked(db: Database) -> str:
    """What locks the rows a claim takes and skips those another worker is claiming (PostgreSQL; SQLite's
    transaction holds the one writer lock already)."""
    return " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""


def pair_lineage(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}@{offset}"


#: An explicit judgement's pair overwrites whatever pair (query, document) had.
REPLACE_PAIR = ("DO UPDATE SET query = excluded.query, text = excluded.text, kind = excluded.kind, source = "
                "excluded.source, feedback_offset = excluded.feedback_offset, created_at = excluded.created_at, "
                "seq = excluded.seq")


SQLITE_TABLES = """
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
        CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS judgements (query_id TEXT NOT NULL, doc_id TEXT NOT NULL,
            judgement INTEGER NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
            "offset" INTEGER NOT NULL, judged_at REAL NOT NULL, PRIMARY KEY (query_id, doc_id));
        CREATE INDEX IF NOT EXISTS judgements_judged_at ON judgements (judged_at)
    """


def _sqlite_schema(db: Connection) -> None:
    for statement in SQLITE_TABLES.split(";"):
        db.execute(statement)
    # columns added since the first release
    pending = {row[1] for row in db.execute("PRAGMA table_info(pending)").fetchall()}
    if "claimed_until" not in pending:
        db.execute("ALTER TABLE pending ADD COLUMN claimed_until REAL NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE pending ADD COLUMN claimed_by TEXT")
    for table, column in (("trainings", "pairs_sequence"), ("retrains", "pairs_sequence"), ("pairs", "seq")):
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    retrains = {row[1] for row in db.execute("PRAGMA table_info(retrains)").fetchall()}
    if "published" not in retrains:  # requests recorded before were published
        db.execute("ALTER TABLE retrains ADD COLUMN published INTEGER NOT NULL DEFAULT 1")
    if "publish_claimed_until" not in retrains:
        db.execute("ALTER TABLE retrains ADD COLUMN publish_claimed_until REAL NOT NULL DEFAULT 0")


SCHEMA = Schema(sqlite=_sqlite_schema, postgresql=(
    # 1: held feedback (settled by claims), pairs (a retrain reads those changed since a sequence), retrain
    # requests and trainings (`rowid` names a row and orders rows of one instant, as SQLite's does), the pairs
    # counter, the latest judgements
    """CREATE TABLE pending (topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" BIGINT NOT NULL, key BYTEA,
           value BYTEA NOT NULL, query_id TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
           claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0, claimed_by TEXT,
           rowid BIGINT GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (topic, partition, "offset"));
       CREATE INDEX pending_received_at ON pending (received_at, rowid);
       CREATE TABLE pairs (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, query TEXT NOT NULL, text TEXT NOT NULL,
           kind TEXT NOT NULL, source TEXT NOT NULL, feedback_offset TEXT NOT NULL,
           created_at DOUBLE PRECISION NOT NULL, seq BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (query_id, doc_id));
       CREATE INDEX pairs_created_at ON pairs (created_at);
       CREATE INDEX pairs_seq ON pairs (seq);
       CREATE TABLE retrains (rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           requested_at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, pairs INTEGER NOT NULL,
           pairs_sequence BIGINT NOT NULL DEFAULT 0, published INTEGER NOT NULL DEFAULT 1,
           publish_claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0);
       CREATE TABLE trainings (rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           snapshot_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION NOT NULL, version TEXT,
           status TEXT NOT NULL, reason TEXT, pairs_sequence BIGINT NOT NULL DEFAULT 0);
       CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
       CREATE TABLE judgements (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, judgement INTEGER NOT NULL,
           topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" BIGINT NOT NULL,
           judged_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (query_id, doc_id));
       CREATE INDEX judgements_judged_at ON judgements (judged_at);""",
))
