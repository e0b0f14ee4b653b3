"""The evaluation store (SQLite, WAL, in the shared data directory next to the query log): every answer with the
arm and versions that gave it and its slice keys, the judgements feedback made of it, each version's offline
held-out metrics, and the experiments with their decisions.

Several workers may write: each process serializes its writes under one lock, SQLite's file lock serializes the
processes (`busy_timeout`), and every state change of an experiment is one conditional UPDATE, so two workers can
never both decide it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.state.database import Connection, Database, Schema, insert_rows
from streams.state.errors import ExperimentConflict
from streams.state.sqlite import SqliteDatabase

#: Arms an answer row can have: the three that users saw, and the shadow's answer that nobody saw.
ARMS = ("serving", "candidate", "interleave", "shadow")
#: States of an experiment: building its collection, running, promoted (watched by the guardrails for a while),
#: then finished, stopped or rolled back; or ended (decision `end`): what serves changed outside the experiment (its
#: candidate serves, or its baseline no longer does), or its start named a version serving already (the reason says).
LIVE_STATES = ("building", "running")


@dataclass(frozen=True)
class AnswerRecord:
    """One arm's answer to one query."""

    query_id: str
    arm: str
    model_version: str
    index_version: str
    latency_ms: float
    doc_ids: list[str]
    answered_at: float
    length: str  # slice: the query's length bucket
    source: str  # slice: the top hit's source ("" when none)
    segment: str  # slice: the producer's segment ("" when none)
    experiment: str = ""
    user_key: str = ""
    credits: dict[str, str] | None = None  # interleave: doc_id -> "serving" | "candidate"
    cached: bool = False  # answered from the query cache (its latency says nothing of the model)


@dataclass(frozen=True)
class JudgementRecord:
    """One accepted judgement (-1/0/1) of a document for a query, placed by its feedback record (`topic`,
    `partition`, `offset`; -1 when unknown): of two from one partition the later offset counts."""

    query_id: str
    doc_id: str
    judgement: int
    judged_at: float
    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class JudgedAnswers:
    """Answers with the judgements of their queries (query_id -> {doc_id: judgement}): what metrics are made of."""

    answers: list[AnswerRecord]
    judgements: dict[str, dict[str, int]]


@dataclass(frozen=True)
class ExperimentRecord:
    id: str
    model: str
    version: str
    baseline: str
    mode: str
    fraction: float
    state: str
    started_at: float
    ended_at: float | None = None
    decision: str | None = None  # promote, stop, rollback
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class EvaluationStore:
    """Answers, judgements, offline metrics and experiments; rows of answers older than `max_age_s` are pruned."""

    def __init__(self, database: Database | Path, busy_timeout_s: float = 5.0) -> None:
        """`database`: where the store lives (a path: an SQLite file there)."""
        self._db = (SqliteDatabase(database, "evaluation store", busy_timeout_s) if isinstance(database, Path)
                    else database)
        self._db.ensure(SCHEMA)

    # answers and judgements

    def record_answers(self, answers: Sequence[AnswerRecord]) -> None:
        """Store answers; a query answered again (re-delivered) keeps its first answer, as the query log does."""
        rows = [(a.query_id, a.arm, a.model_version, a.index_version, a.latency_ms, json.dumps(a.doc_ids),
                 a.answered_at, a.length, a.source, a.segment, a.experiment, a.user_key,
                 None if a.credits is None else json.dumps(a.credits), int(a.cached)) for a in answers]
        if rows:
            insert_rows(self._db, "INSERT INTO answers (query_id, arm, model_version, index_version, latency_ms, "
                                  "doc_ids, answered_at, length, source, segment, experiment, user_key, credits, "
                                  "cached) VALUES", rows, "ON CONFLICT (query_id, arm) DO NOTHING", key_columns=2)

    def record_judgements(self, judgements: Iterable[JudgementRecord | tuple[str, str, int, float]]) -> None:
        """Accepted judgements (or (query_id, doc_id, judgement, when), unplaced): the latest judgement of a
        document for a query counts. One from the same partition as the one kept but at a lower offset (arriving
        late) is ignored, and the same one again (re-delivered, or settled by another worker) changes nothing."""
        records = [j if isinstance(j, JudgementRecord) else JudgementRecord(*j) for j in judgements]
        # in key order (a stable sort keeps a key's judgements in theirs): two workers' batches never deadlock
        rows = sorted([(r.query_id, r.doc_id, r.judgement, r.judged_at, r.topic, r.partition, r.offset)
                       for r in records], key=lambda row: row[:2])
        if rows:
            self._write(
                "INSERT INTO judgements (query_id, doc_id, judgement, judged_at, feedback_topic, feedback_partition, "
                "feedback_offset) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (query_id, doc_id) DO UPDATE SET "
                "judgement = excluded.judgement, judged_at = excluded.judged_at, feedback_topic = "
                "excluded.feedback_topic, feedback_partition = excluded.feedback_partition, feedback_offset = "
                "excluded.feedback_offset WHERE excluded.feedback_offset < 0 OR judgements.feedback_topic != "
                "excluded.feedback_topic OR judgements.feedback_partition != excluded.feedback_partition OR "
                "excluded.feedback_offset > judgements.feedback_offset", rows)

    def answers(self, since: float = 0.0, until: float | None = None, limit: int = 1_000_000,
                experiment: str | None = None) -> list[AnswerRecord]:
        """Answers in [since, until) (of `experiment` when given), oldest first; at most the latest `limit`."""
        window, params = _window(since, until, experiment)
        rows = self._db.fetchall(
            "SELECT query_id, arm, model_version, index_version, latency_ms, doc_ids, answered_at, length, "
            f"source, segment, experiment, user_key, credits, cached FROM answers WHERE {window} "
            "ORDER BY answered_at DESC, rowid DESC LIMIT ?", (*params, limit))[::-1]
        return [AnswerRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9], r[10], r[11],
                             None if r[12] is None else json.loads(r[12]), bool(r[13])) for r in rows]

    def judged_answers(self, since: float = 0.0, until: float | None = None, limit: int = 1_000_000,
                       experiment: str | None = None) -> JudgedAnswers:
        """`answers` (only those of `experiment` when given) with their queries' judgements."""
        answers = self.answers(since, until, limit, experiment)
        if len(answers) < 500:
            return JudgedAnswers(answers, self.judgements(a.query_id for a in answers))
        # many answers: the judgements of the window's queries in one statement (a semi-join), kept for these
        wanted = {a.query_id for a in answers}
        judged: dict[str, dict[str, int]] = {}
        window, params = _window(since, until, experiment)
        for query_id, doc_id, judgement in self._db.fetchall(
                "SELECT query_id, doc_id, judgement FROM judgements WHERE query_id IN (SELECT query_id FROM answers "
                f"WHERE {window} ORDER BY answered_at DESC, rowid DESC LIMIT ?)", (*params, limit)):
            if query_id in wanted:
                judged.setdefault(query_id, {})[doc_id] = judgement
        return JudgedAnswers(answers, judged)

    def judgements(self, query_ids: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """query_id -> {doc_id: judgement}."""
        if query_ids is None:
            rows = self._db.fetchall("SELECT query_id, doc_id, judgement FROM judgements")
        else:
            rows = []
            ids = list(dict.fromkeys(query_ids))
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                rows += self._db.fetchall(f"SELECT query_id, doc_id, judgement FROM judgements WHERE query_id IN "
                                          f"({','.join('?' * len(part))})", part)
        judged: dict[str, dict[str, int]] = {}
        for query_id, doc_id, judgement in rows:
            judged.setdefault(query_id, {})[doc_id] = judgement
        return judged

    def prune(self, max_age_s: float, now: float) -> int:
        with self._db.transaction("maintenance") as db:
            answers = db.execute("DELETE FROM answers WHERE answered_at < ?", (now - max_age_s,)).rowcount
            return answers + db.execute("DELETE FROM judgements WHERE judged_at < ?", (now - max_age_s,)).rowcount

    # offline metrics

    def record_offline(self, version: str, measures: dict[str, float], now: float | None = None) -> None:
        at = time.time() if now is None else now
        self._write("INSERT INTO offline VALUES (?, ?, ?, ?) ON CONFLICT (version, measure) DO UPDATE SET "
                    "value = excluded.value, recorded_at = excluded.recorded_at",
                    [(version, name, float(value), at) for name, value in measures.items()])

    def offline(self) -> dict[str, dict[str, float]]:
        """version -> {measure: value}."""
        rows = self._db.fetchall("SELECT version, measure, value FROM offline ORDER BY version")
        offline: dict[str, dict[str, float]] = {}
        for version, measure, value in rows:
            offline.setdefault(version, {})[measure] = value
        return offline

    # experiments

    def start_experiment(self, experiment: ExperimentRecord) -> ExperimentRecord:
        """Store a new experiment; `ExperimentConflict` if one of the model is still live (building or running),
        or the id was used before. A promoted one still watched by the guardrails finishes: the new experiment
        compares against what serves now."""
        with self._db.transaction() as db:
            running = db.execute(
                "SELECT id, version, state FROM experiments WHERE model = ? AND state IN "
                "('building', 'running')", (experiment.model,)).fetchone()
            if running is not None:
                raise ExperimentConflict(f"experiment {running[0]} of {running[1]} is {running[2]}; stop it "
                                         "first (one experiment per model at a time)")
            if db.execute("SELECT 1 FROM experiments WHERE id = ?", (experiment.id,)).fetchone():
                raise ExperimentConflict(f"experiment id {experiment.id!r} was used before")
            db.execute("UPDATE experiments SET state = 'finished', reason = COALESCE(reason, '') || ? "
                       "WHERE model = ? AND state = 'promoted'",
                       (f"; watch ended: experiment {experiment.id} started", experiment.model))
            db.execute("INSERT INTO experiments (id, model, version, baseline, mode, fraction, state, started_at, "
                       "ended_at, decision, reason, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (experiment.id, experiment.model, experiment.version, experiment.baseline,
                        experiment.mode, experiment.fraction, experiment.state, experiment.started_at,
                        experiment.ended_at, experiment.decision, experiment.reason,
                        json.dumps(experiment.evidence)))
        return experiment

    def record_ended(self, experiment: ExperimentRecord) -> bool:
        """Store an experiment that ended as it started (a start refused when applied), beside any live one; False
        when its id is stored already (a re-delivered start changes nothing)."""
        with self._db.transaction() as db:  # serialized with `start_experiment`, which may store the same id
            return db.execute(
                "INSERT INTO experiments (id, model, version, baseline, mode, fraction, state, started_at, "
                "ended_at, decision, reason, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
            (experiment.id, experiment.model, experiment.version, experiment.baseline, experiment.mode,
             experiment.fraction, experiment.state, experiment.started_at, experiment.ended_at, experiment.decision,
                 experiment.reason, json.dumps(experiment.evidence))).rowcount == 1

    def transition(self, experiment_id: str, from_states: Sequence[str], to_state: str, *,
                   decision: str | None = None, reason: str | None = None, evidence: dict[str, Any] | None = None,
                   ended: bool = False, now: float | None = None, announce: bool = False) -> bool:
        """Move an experiment from one of `from_states` to `to_state` (with the decision and its evidence);
        False when it was not in one of them (another worker decided first). `announce`: the decision still has to
        be published (`unannounced` lists it until `announced` is called)."""
        at = time.time() if now is None else now
        return self._db.execute(
            f"UPDATE experiments SET state = ?, decision = COALESCE(?, decision), reason = COALESCE(?, reason), "
            f"evidence = COALESCE(?, evidence), ended_at = CASE WHEN ? THEN ? ELSE ended_at END, "
            f"announced = CASE WHEN ? THEN 0 ELSE announced END "
            f"WHERE id = ? AND state IN ({','.join('?' * len(from_states))})",
            (to_state, decision, reason, None if evidence is None else json.dumps(evidence), ended, at, announce,
             experiment_id, *from_states)) == 1

    def unannounced(self, model: str) -> list[ExperimentRecord]:
        """Experiments whose decision was taken but not yet published (a stop came in between)."""
        return [e for e in self.experiments(model) if e.id in {row[0] for row in self._db.fetchall(
            "SELECT id FROM experiments WHERE model = ? AND announced = 0", (model,))}]

    def announced(self, experiment_id: str) -> None:
        """The decision of this experiment is on `model-updates`."""
        self._db.execute("UPDATE experiments SET announced = 1 WHERE id = ?", (experiment_id,))

    def experiments(self, model: str | None = None, limit: int = 20) -> list[ExperimentRecord]:
        """The latest experiments, newest first."""
        columns = ("SELECT id, model, version, baseline, mode, fraction, state, started_at, ended_at, decision, "
                   "reason, evidence FROM experiments ")
        rows = (self._db.fetchall(columns + "ORDER BY started_at DESC LIMIT ?", (limit,)) if model is None else
                self._db.fetchall(columns + "WHERE model = ? ORDER BY started_at DESC LIMIT ?", (model, limit)))
        return [ExperimentRecord(*r[:11], evidence=json.loads(r[11])) for r in rows]

    def active(self, model: str) -> ExperimentRecord | None:
        """The model's latest experiment that is building, running or promoted and watched, if any (refused starts
        recorded after it do not hide it)."""
        rows = self._db.fetchall(
            "SELECT id, model, version, baseline, mode, fraction, state, started_at, ended_at, decision, reason, "
            "evidence FROM experiments WHERE model = ? AND state IN ('building', 'running', 'promoted') "
            "ORDER BY started_at DESC LIMIT 1", (model,))
        return next((ExperimentRecord(*r[:11], evidence=json.loads(r[11])) for r in rows), None)

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._db.transaction("write") as db:
            db.executemany(sql, rows)

    def close(self) -> None:
        self._db.close()


def _window(since: float, until: float | None, experiment: str | None) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (and its parameters) of the answers in [since, until), of `experiment` when given."""
    bounds = (since, until if until is not None else float("inf"))
    if experiment is None:
        return "answered_at >= ? AND answered_at < ?", bounds
    return "experiment = ? AND answered_at >= ? AND answered_at < ?", (experiment, *bounds)


SQLITE_TABLES = """
        CREATE TABLE IF NOT EXISTS answers (query_id TEXT NOT NULL, arm TEXT NOT NULL,
            model_version TEXT NOT NULL, index_version TEXT NOT NULL, latency_ms REAL NOT NULL,
            doc_ids TEXT NOT NULL, answered_at REAL NOT NULL, length TEXT NOT NULL, source TEXT NOT NULL,
            segment TEXT NOT NULL, experiment TEXT NOT NULL, user_key TEXT NOT NULL, credits TEXT,
            cached INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (query_id, arm));
        CREATE INDEX IF NOT EXISTS answers_answered_at ON answers (answered_at);
        CREATE INDEX IF NOT EXISTS answers_experiment_time ON answers (experiment, answered_at);
        CREATE TABLE IF NOT EXISTS judgements (query_id TEXT NOT NULL, doc_id TEXT NOT NULL,
            judgement INTEGER NOT NULL, judged_at REAL NOT NULL, PRIMARY KEY (query_id, doc_id));
        CREATE TABLE IF NOT EXISTS offline (version TEXT NOT NULL, measure TEXT NOT NULL, value REAL NOT NULL,
            recorded_at REAL NOT NULL, PRIMARY KEY (version, measure));
        CREATE TABLE IF NOT EXISTS experiments (id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
            baseline TEXT NOT NULL, mode TEXT NOT NULL, fraction REAL NOT NULL, state TEXT NOT NULL,
            started_at REAL NOT NULL, ended_at REAL, decision TEXT, reason TEXT, evidence TEXT NOT NULL)
    """


def _sqlite_schema(db: Connection) -> None:
    for statement in SQLITE_TABLES.split(";"):
        db.execute(statement)
    # columns added since the first release
    if "announced" not in {row[1] for row in db.execute("PRAGMA table_info(experiments)").fetchall()}:
        db.execute("ALTER TABLE experiments ADD COLUMN announced INTEGER NOT NULL DEFAULT 1")
    if "feedback_offset" not in {row[1] for row in db.execute("PRAGMA table_info(judgements)").fetchall()}:
        db.execute("ALTER TABLE judgements ADD COLUMN feedback_topic TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE judgements ADD COLUMN feedback_partition INTEGER NOT NULL DEFAULT -1")
        db.execute("ALTER TABLE judgements ADD COLUMN feedback_offset INTEGER NOT NULL DEFAULT -1")


SCHEMA = Schema(sqlite=_sqlite_schema, postgresql=(
    # 1: answers per arm (`rowid` orders those of one instant by the order they were written in, as SQLite's
    # does; read by time, and by experiment and time: every version and arm of a window is summarized together),
    # judgements, offline metrics, experiments (the live one of a model is looked up by model and state)
    """CREATE TABLE answers (query_id TEXT NOT NULL, arm TEXT NOT NULL, model_version TEXT NOT NULL,
           index_version TEXT NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, doc_ids TEXT NOT NULL,
           answered_at DOUBLE PRECISION NOT NULL, length TEXT NOT NULL, source TEXT NOT NULL, segment TEXT NOT NULL,
           experiment TEXT NOT NULL, user_key TEXT NOT NULL, credits TEXT, cached INTEGER NOT NULL DEFAULT 0,
           rowid BIGINT GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (query_id, arm));
       CREATE INDEX answers_answered_at ON answers (answered_at, rowid);
       CREATE INDEX answers_experiment_time ON answers (experiment, answered_at);
       CREATE TABLE judgements (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, judgement INTEGER NOT NULL,
           judged_at DOUBLE PRECISION NOT NULL, feedback_topic TEXT NOT NULL DEFAULT '',
           feedback_partition INTEGER NOT NULL DEFAULT -1, feedback_offset BIGINT NOT NULL DEFAULT -1,
           PRIMARY KEY (query_id, doc_id));
       CREATE INDEX judgements_judged_at ON judgements (judged_at);
       CREATE TABLE offline (version TEXT NOT NULL, measure TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,
           recorded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (version, measure));
       CREATE TABLE experiments (id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
           baseline TEXT NOT NULL, mode TEXT NOT NULL, fraction DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
           started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION, decision TEXT, reason TEXT,
           evidence TEXT NOT NULL, announced INTEGER NOT NULL DEFAULT 1);
       CREATE INDEX experiments_model_state ON experiments (model, state, started_at);""",
))
