"""Copying the SQLite state into PostgreSQL (`streams.state.state_copy`), against a real PostgreSQL server: every
row reads back through the store APIs as it did on SQLite, a second copy copies nothing and duplicates nothing, ids
recorded after it are new, an older SQLite file is upgraded first, and a missing file or an absent server is an
error of its own. A copy goes only into a schema that holds nothing but what copies from the same file put there:
one workers already wrote to, before or during the copy, is refused; an interrupted copy resumes."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.devtools.postgres_server import PostgresServer, free_port
from streams.state import query_log, state_copy
from streams.state.database import StateStore
from streams.state.errors import StateUnavailable
from streams.state.evaluation_store import AnswerRecord, EvaluationStore, ExperimentRecord, JudgementRecord
from streams.state.postgres import PostgresDatabase, schema_name
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.sqlite import SqliteDatabase
from streams.state.state_copy import STORES, MissingSource, StoreCopied, TableCount, copy_store
from streams.state.training_pairs import Judgement, PendingFeedback, TrainingPair, TrainingPairs

FILES: dict[StateStore, str] = {"query log": "queries.sqlite3", "feedback state": "feedback.sqlite3",
                                "evaluation store": "evaluation.sqlite3"}


def build_sqlite_state(root: Path) -> None:
    """A state with a row in every table, written through the store APIs (the files a deployment has)."""
    log = QueryLog(root / FILES["query log"])
    log.record([LoggedQuery(f"q{i}", {"text": f"query {i}"}, {"hits": [{"doc_id": "a", "text": "about a"}],
                                                              "model_version": "v1", "index_version": "i1"},
                            100.0 + i // 2, "kafka") for i in range(5)])  # two answers per instant: order by rowid
    log.close()

    feedback = TrainingPairs(root / FILES["feedback state"])
    feedback.hold([PendingFeedback("feedback", 0, 7, b"q9", b'{"query_id": "q9"}', "q9", 50.0),
                   PendingFeedback("feedback", 1, 3, None, b"\x00\xff", "q8", 51.0)])
    served = (("a", "about a"), ("b", "about b"), ("c", "about c"))
    feedback.judge([Judgement("q1", "query 1", "a", "about a", 1, "feedback", 0, 1, 101.0, served),
                    Judgement("q1", "query 1", "c", "about c", -1, "feedback", 0, 2, 102.0, served)])
    first = feedback.record_retrain_if("drift", at=200.0, min_interval_s=0.0)
    assert first is not None
    feedback.retrain_published(first.row)
    feedback.judge([Judgement("q2", "query 2", "b", "about b", 1, "feedback", 1, 5, 201.0, served)])
    assert feedback.record_retrain_if("schedule", at=300.0, min_interval_s=0.0) is not None  # not published
    feedback.record_training(200.0, "v2", "promoted", "drift", pairs_sequence=3)
    feedback.record_training(300.0, None, "failed", None, pairs_sequence=4)
    feedback.close()

    evaluation = EvaluationStore(root / FILES["evaluation store"])
    evaluation.record_answers([
        AnswerRecord("q1", "serving", "v1", "i1", 5.0, ["a", "b"], 100.0, "short", "docs", "", "e1", "u1"),
        AnswerRecord("q1", "shadow", "v2", "i2", 7.5, ["b"], 100.0, "short", "docs", "", "e1", "u1"),
        AnswerRecord("q2", "interleave", "v1", "i1", 6.0, ["a", "b"], 101.0, "long", "", "vip", "e1", "u2",
                     {"a": "serving", "b": "candidate"}, cached=True)])
    evaluation.record_judgements([JudgementRecord("q1", "a", 1, 101.0, "feedback", 0, 1), ("q2", "b", -1, 102.0)])
    evaluation.record_offline("v2", {"held_out_nDCG@10": 0.5, "held_out_MRR@10": 0.4}, now=150.0)
    evaluation.start_experiment(ExperimentRecord("e1", "minilm", "v2", "v1", "shadow", 0.1, "building", 90.0))
    assert evaluation.transition("e1", ("building",), "running", now=95.0)
    evaluation.start_experiment(ExperimentRecord("e0", "other", "v3", "v1", "split", 0.5, "building", 80.0))
    assert evaluation.transition("e0", ("building",), "stopped", decision="stop", reason="guardrail",
                                 evidence={"positive_rate": -0.2}, ended=True, now=85.0, announce=True)
    evaluation.close()


def store_views(database: Any) -> dict[StateStore, Any]:
    """What each store's API says (`database`: store -> its Database)."""
    log = QueryLog(database["query log"])
    feedback = TrainingPairs(database["feedback state"])
    evaluation = EvaluationStore(database["evaluation store"])
    return {
        "query log": (log.count(), list(log.since()), log.recent(3), log.get("q3")),
        "feedback state": (feedback.held(), feedback.pairs(), feedback.for_query("q1"), feedback.sequence(),
                           feedback.count("positive"), feedback.retrains(), feedback.last_retrain(),
                           feedback.trainings(), feedback.claim_unpublished_retrains(now=10_000.0)),
        "evaluation store": (evaluation.answers(), evaluation.judgements(), evaluation.offline(),
                             evaluation.experiments(), evaluation.active("minilm"), evaluation.unannounced("other")),
    }


def table_rows(database: Any, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    quoted = ", ".join(f'"{column}"' for column in columns)
    return sorted(tuple(row) for row in database.fetchall(f'SELECT {quoted} FROM "{table}"'))


def sqlite_columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]


class Target:
    """A fresh PostgreSQL database; opens the stores' schemas there (closed at the end of the test)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[PostgresDatabase] = []

    def open(self, store: StateStore, namespace: str = "") -> PostgresDatabase:
        database = PostgresDatabase(self.url, store, namespace=namespace, pool_size=2)
        self.opened.append(database)
        return database

    def stores(self) -> dict[StateStore, PostgresDatabase]:
        return {store: self.open(store) for store in FILES}

    def copy(self, root: Path, **options: Any) -> dict[StateStore, StoreCopied]:
        return {store: copy_store(store, root / name, self.url, **options) for store, name in FILES.items()}


@pytest.fixture
def target(postgres_server: PostgresServer) -> Iterator[Target]:
    opened = Target(postgres_server.new_database())
    try:
        yield opened
    finally:
        for database in opened.opened:
            database.close()


def sqlite_stores(root: Path) -> dict[StateStore, SqliteDatabase]:
    return {store: SqliteDatabase(root / name, store) for store, name in FILES.items()}


def test_every_table_reads_back_from_postgresql_as_it_was_on_sqlite(tmp_path: Path, target: Target) -> None:
    build_sqlite_state(tmp_path)
    copied = target.copy(tmp_path)
    sqlite, postgresql = sqlite_stores(tmp_path), target.stores()
    assert store_views(postgresql) == store_views(sqlite)
    for store, tables in STORES.items():
        for table in tables.tables:
            columns = sqlite_columns(tmp_path / FILES[store], table.name)
            columns = (["rowid"] if table.keeps_rowid else []) + columns
            rows = table_rows(sqlite[store], table.name, columns)
            assert rows, f"{store}: {table.name} should hold a row for this test"
            assert table_rows(postgresql[store], table.name, columns) == rows, (store, table.name)
    for store, done in copied.items():  # every row was new
        assert done.already_there == 0 and done.copied == sum(table.rows for table in done.tables), store
    assert [(table.table, table.rows) for table in copied["evaluation store"].tables] == [
        ("answers", 3), ("judgements", 2), ("offline", 2), ("experiments", 2)]
    assert copied["feedback state"].schema == "gristmill_feedback"
    for database in sqlite.values():
        database.close()


def test_a_second_copy_copies_nothing_and_duplicates_nothing(tmp_path: Path, target: Target,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_copy, "BATCH_ROWS", 2)  # several batches per table
    build_sqlite_state(tmp_path)
    heard: list[TableCount] = []
    first = target.copy(tmp_path, progress=heard.append)
    queries = [count for count in heard if count.table == "queries"]
    assert [(c.rows, c.done, c.copied) for c in queries] == [(5, 0, 0), (5, 2, 2), (5, 4, 4), (5, 5, 5)]
    second = target.copy(tmp_path)
    for store in FILES:
        assert second[store].copied == 0 and second[store].already_there == first[store].copied, store
    views = store_views(target.stores())
    assert views["query log"][0] == 5 and len(views["feedback state"][5]) == 2  # no query, no retrain twice
    assert len(views["evaluation store"][0]) == 3


def copies_recorded(database: PostgresDatabase) -> list[tuple[str, str, int]]:
    """What the schema's `state_copies` says: (file name, table, rows inserted by the copies from it)."""
    return [(Path(path).name, table, rows) for path, table, rows in database.fetchall(
        "SELECT path, table_name, rows FROM state_copies ORDER BY table_name")]


def test_each_schema_records_the_file_its_rows_were_copied_from(tmp_path: Path, target: Target) -> None:
    build_sqlite_state(tmp_path)
    target.copy(tmp_path)
    target.copy(tmp_path)  # counted once
    assert copies_recorded(target.open("feedback state")) == [
        ("feedback.sqlite3", table, rows) for table, rows in
        [("counters", 1), ("judgements", 3), ("pairs", 5), ("pending", 2), ("retrains", 2), ("trainings", 2)]]
    assert copies_recorded(target.open("query log")) == [("queries.sqlite3", "queries", 5)]
    (source,) = {key for (key,) in target.open("evaluation store").fetchall("SELECT DISTINCT source FROM state_copies")}
    with sqlite3.connect(tmp_path / FILES["evaluation store"]) as db:  # the id the copy wrote into the file
        (file_id,) = db.execute(f"SELECT id FROM {state_copy.SOURCE_TABLE}").fetchone()
    db.close()
    assert source == f"{file_id}/inode {(tmp_path / FILES['evaluation store']).stat().st_ino}"
    # not a store migration: the store's own migrations are all there is in schema_migrations
    assert target.open("query log").migrations() == list(range(1, len(query_log.SCHEMA.postgresql) + 1))


def test_rows_recorded_after_the_copy_get_new_ids(tmp_path: Path, target: Target) -> None:
    build_sqlite_state(tmp_path)
    target.copy(tmp_path)
    database = target.open("feedback state")
    feedback = TrainingPairs(database)
    copied_rows = [row for (row,) in database.fetchall("SELECT rowid FROM retrains ORDER BY rowid")]
    assert copied_rows == [1, 2]
    served = (("d", "about d"), ("f", "about f"))  # two pairs: d, and f inferred below it
    feedback.judge([Judgement("q3", "query 3", "d", "about d", 1, "feedback", 0, 9, 400.0, served)])
    later = feedback.record_retrain_if("drift", at=500.0, min_interval_s=0.0)
    assert later is not None and later.row > max(copied_rows)
    feedback.record_training(500.0, "v3", "promoted", "drift", pairs_sequence=feedback.sequence())
    trainings = [row for (row,) in database.fetchall("SELECT rowid FROM trainings ORDER BY rowid")]
    assert trainings[-1] > 2 and len(trainings) == 3


def postgresql_rows(database: PostgresDatabase) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the feedback state's tables on PostgreSQL (to show a refused copy wrote nothing)."""
    return {table.name: sorted(map(tuple, database.fetchall(f'SELECT * FROM "{table.name}"')), key=repr)
            for table in STORES["feedback state"].tables}


def test_a_copy_into_a_schema_workers_already_wrote_to_is_refused_and_writes_nothing(
        tmp_path: Path, target: Target) -> None:
    """Workers started on the empty database before the migration (`docker compose up -d` first): their retrain
    request is rowid 1 there, as the file's first one is in SQLite. Merged, the file's would be "already there"."""
    build_sqlite_state(tmp_path)
    database = target.open("feedback state")
    on_postgresql = TrainingPairs(database)
    on_postgresql.judge([Judgement("q7", "query 7", "z", "about z", 1, "feedback", 0, 70, 700.0, ())])
    assert on_postgresql.record_retrain_if("drift", at=700.0, min_interval_s=0.0) is not None
    before = postgresql_rows(database)
    with pytest.raises(state_copy.TargetDiverged) as refused:
        copy_store("feedback state", tmp_path / FILES["feedback state"], target.url)
    message = str(refused.value)
    assert message.startswith(f"feedback state: the PostgreSQL state already holds data not copied from "
                              f"{(tmp_path / FILES['feedback state']).resolve()} (schema gristmill_feedback: ")
    assert "retrains: 1 rows, none copied from it" in message and "migrate into an empty database" in message
    assert "\n" not in message
    assert postgresql_rows(database) == before  # nothing merged, no counter moved
    assert database.fetchall("SELECT to_regclass('state_copies')") == [(None,)]  # nor a record of a copy
    with pytest.raises(state_copy.TargetDiverged):  # the check alone says so too
        state_copy.check_target("feedback state", tmp_path / FILES["feedback state"], target.url)
    # the store that nobody wrote to is copied
    assert copy_store("query log", tmp_path / FILES["query log"], target.url).copied == 5


def test_a_copy_again_after_workers_wrote_to_postgresql_is_refused(tmp_path: Path, target: Target) -> None:
    """Copied, then workers wrote to PostgreSQL (retrain 3, a larger pairs counter) while others went on writing to
    the file (its own retrain 3): the two histories are not merged."""
    build_sqlite_state(tmp_path)
    target.copy(tmp_path)
    database = target.open("feedback state")
    on_postgresql = TrainingPairs(database)
    on_postgresql.judge([Judgement("q3", "query 3", "d", "about d", 1, "feedback", 0, 9, 400.0, ())])
    assert on_postgresql.record_retrain_if("drift", at=500.0, min_interval_s=0.0) is not None
    on_sqlite = TrainingPairs(tmp_path / FILES["feedback state"])
    on_sqlite.judge([Judgement("q4", "query 4", "e", "about e", 1, "feedback", 2, 1, 450.0, ())])
    assert on_sqlite.record_retrain_if("schedule", at=460.0, min_interval_s=0.0) is not None
    on_sqlite.close()
    before = postgresql_rows(database)
    with pytest.raises(state_copy.TargetDiverged) as refused:
        copy_store("feedback state", tmp_path / FILES["feedback state"], target.url)
    assert "retrains: 3 rows, 2 copied from it" in str(refused.value)
    assert postgresql_rows(database) == before


def test_a_copy_again_copies_what_the_file_gained_since_and_its_counter(tmp_path: Path, target: Target) -> None:
    """Nothing else wrote to PostgreSQL: the file is the one history, and what it gained since is copied (its
    counter, larger now, with it)."""
    build_sqlite_state(tmp_path)
    target.copy(tmp_path)
    feedback = TrainingPairs(target.open("feedback state"))
    on_sqlite = TrainingPairs(tmp_path / FILES["feedback state"])
    on_sqlite.add([TrainingPair("q5", "query 5", f"x{i}", "about x", "positive", "feedback", "feedback/3@1")
                   for i in range(3)])
    assert on_sqlite.sequence() > feedback.sequence()
    again = copy_store("feedback state", tmp_path / FILES["feedback state"], target.url)
    assert {c.table: c.copied for c in again.tables}["pairs"] == 3
    assert {c.table: c.copied for c in again.tables}["counters"] == 1  # the counter's new value
    assert feedback.sequence() == on_sqlite.sequence() and feedback.pairs() == on_sqlite.pairs()
    on_sqlite.close()
    copy_store("feedback state", tmp_path / FILES["feedback state"], target.url)  # and so on


def test_an_interrupted_copy_resumes(tmp_path: Path, target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_copy, "BATCH_ROWS", 2)
    build_sqlite_state(tmp_path)

    def interrupt(count: TableCount) -> None:
        if count.table == "pairs" and count.done == 2:  # pending copied, two pairs of five
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_store("feedback state", tmp_path / FILES["feedback state"], target.url, progress=interrupt)
    database = target.open("feedback state")
    assert database.fetchone("SELECT COUNT(*) FROM pairs") == (2,)
    state_copy.check_target("feedback state", tmp_path / FILES["feedback state"], target.url)  # may go on
    resumed = copy_store("feedback state", tmp_path / FILES["feedback state"], target.url)
    assert {c.table: (c.copied, c.already_there) for c in resumed.tables}["pairs"] == (3, 2)
    assert {c.table: c.already_there for c in resumed.tables}["pending"] == 2
    sqlite = sqlite_stores(tmp_path)  # every row once, as in the file
    assert store_views(target.stores())["feedback state"] == store_views(sqlite)["feedback state"]
    for table in STORES["feedback state"].tables:
        columns = (["rowid"] if table.keeps_rowid else []) + sqlite_columns(tmp_path / FILES["feedback state"],
                                                                            table.name)
        assert table_rows(database, table.name, columns) == table_rows(sqlite["feedback state"], table.name, columns)
    for opened in sqlite.values():
        opened.close()


def test_workers_writing_during_the_copy_are_found(tmp_path: Path, target: Target,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_copy, "BATCH_ROWS", 2)
    build_sqlite_state(tmp_path)
    log = QueryLog(target.open("query log"))

    def worker_writes(count: TableCount) -> None:
        if count.done == 2:
            log.record([LoggedQuery("w1", {"text": "from a worker"}, {"hits": []}, 900.0, "http")])

    with pytest.raises(state_copy.TargetDiverged) as found:
        copy_store("query log", tmp_path / FILES["query log"], target.url, progress=worker_writes)
    assert "was written to while it was copied from" in str(found.value)
    assert "queries: 6 rows, 5 copied from it" in str(found.value)


def test_the_source_is_the_file_itself_not_its_path(tmp_path: Path, target: Target) -> None:
    """Moved (or seen through another mount), a file is the same source; another file at its path, or a copy of it
    (a backup restored: it may have gone on from another point), is not."""
    first, moved = tmp_path / "first", tmp_path / "moved"
    first.mkdir()
    build_sqlite_state(first)
    copy_store("query log", first / FILES["query log"], target.url)
    first.rename(moved)
    assert copy_store("query log", moved / FILES["query log"], target.url).already_there == 5
    assert copies_recorded(target.open("query log")) == [("queries.sqlite3", "queries", 5)]

    other = tmp_path / "other"
    other.mkdir()
    build_sqlite_state(other)  # the same rows, written by other workers
    first.mkdir()
    (other / FILES["query log"]).rename(first / FILES["query log"])
    with pytest.raises(state_copy.TargetDiverged):
        copy_store("query log", first / FILES["query log"], target.url)

    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy2(moved / FILES["query log"], restored / FILES["query log"])  # the same id inside, another file
    with pytest.raises(state_copy.TargetDiverged):
        copy_store("query log", restored / FILES["query log"], target.url)


def test_the_check_alone_writes_nothing(tmp_path: Path, target: Target) -> None:
    build_sqlite_state(tmp_path)
    path = tmp_path / FILES["evaluation store"]
    state_copy.check_target("evaluation store", path, target.url)  # an empty database: nothing in the way
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = ?", (state_copy.SOURCE_TABLE,)).fetchall() == []
    db.close()
    assert target.open("evaluation store").fetchall(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'gristmill%'") == []
    with pytest.raises(MissingSource):
        state_copy.check_target("query log", tmp_path / "elsewhere.sqlite3", target.url)


def old_release_files(root: Path) -> None:
    """The feedback state and evaluation store as the first release wrote them (columns added since are absent)."""
    with sqlite3.connect(root / FILES["feedback state"]) as db:
        db.executescript("""
            CREATE TABLE pending (topic TEXT, partition INTEGER, "offset" INTEGER, key BLOB, value BLOB NOT NULL,
                query_id TEXT NOT NULL, received_at REAL NOT NULL, PRIMARY KEY (topic, partition, "offset"));
            CREATE TABLE pairs (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, query TEXT NOT NULL, text TEXT NOT NULL,
                kind TEXT NOT NULL, source TEXT NOT NULL, feedback_offset TEXT NOT NULL, created_at REAL NOT NULL,
                PRIMARY KEY (query_id, doc_id));
            CREATE TABLE retrains (requested_at REAL NOT NULL, reason TEXT NOT NULL, pairs INTEGER NOT NULL);
            CREATE TABLE trainings (snapshot_at REAL NOT NULL, finished_at REAL NOT NULL, version TEXT,
                status TEXT NOT NULL, reason TEXT);
            CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO pending VALUES ('feedback', 0, 1, NULL, X'7B7D', 'q1', 10.0);
            INSERT INTO pairs VALUES ('q1', 'a', 'query 1', 'about a', 'positive', 'feedback', 'feedback/0@0', 11.0);
            INSERT INTO retrains VALUES (12.0, 'drift', 1);
            INSERT INTO trainings VALUES (12.0, 13.0, 'v2', 'promoted', 'drift');
            INSERT INTO counters VALUES ('pairs', 1);""")
    db.close()
    with sqlite3.connect(root / FILES["evaluation store"]) as db:
        db.executescript("""
            CREATE TABLE judgements (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, judgement INTEGER NOT NULL,
                judged_at REAL NOT NULL, PRIMARY KEY (query_id, doc_id));
            CREATE TABLE experiments (id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
                baseline TEXT NOT NULL, mode TEXT NOT NULL, fraction REAL NOT NULL, state TEXT NOT NULL,
                started_at REAL NOT NULL, ended_at REAL, decision TEXT, reason TEXT, evidence TEXT NOT NULL);
            INSERT INTO judgements VALUES ('q1', 'a', 1, 11.0);
            INSERT INTO experiments VALUES ('e1', 'minilm', 'v2', 'v1', 'shadow', 0.1, 'stopped', 5.0, 6.0, 'stop',
                'by an operator', '{}');""")
    db.close()


def test_an_older_sqlite_file_is_brought_up_to_date_then_copied(tmp_path: Path, target: Target) -> None:
    old_release_files(tmp_path)
    for store in ("feedback state", "evaluation store"):
        copy_store(store, tmp_path / FILES[store], target.url)
    feedback = TrainingPairs(target.open("feedback state"))
    assert feedback.held(now=100.0) == [PendingFeedback("feedback", 0, 1, None, b"{}", "q1", 10.0)]
    assert feedback.retrains() == [{"requested_at": 12.0, "reason": "drift", "pairs": 1}]
    assert feedback.claim_unpublished_retrains(now=100.0) == []  # requests of that release were published
    assert [t["version"] for t in feedback.trainings()] == ["v2"] and feedback.sequence() == 1
    evaluation = EvaluationStore(target.open("evaluation store"))
    assert evaluation.judgements() == {"q1": {"a": 1}} and evaluation.unannounced("minilm") == []
    # a judgement placed later replaces the unplaced one, as on SQLite
    evaluation.record_judgements([JudgementRecord("q1", "a", -1, 20.0, "feedback", 0, 0)])
    assert evaluation.judgements() == {"q1": {"a": -1}}


def test_a_missing_file_is_reported_and_not_created(tmp_path: Path, target: Target) -> None:
    with pytest.raises(MissingSource):
        copy_store("query log", tmp_path / "queries.sqlite3", target.url)
    assert list(tmp_path.iterdir()) == []


def test_a_namespace_copies_into_the_schemas_its_workers_use(tmp_path: Path, target: Target) -> None:
    build_sqlite_state(tmp_path)
    copied = copy_store("query log", tmp_path / FILES["query log"], target.url, namespace="Acme-1")
    assert copied.schema == schema_name("query log", "Acme-1")
    assert QueryLog(target.open("query log", namespace="Acme-1")).count() == 5
    assert QueryLog(target.open("query log")).count() == 0


def test_an_absent_server_fails_after_the_connect_timeout_without_the_password(tmp_path: Path) -> None:
    build_sqlite_state(tmp_path)
    url = f"postgresql://postgres:sekrit-pw@127.0.0.1:{free_port()}/state"
    with pytest.raises(StateUnavailable) as checked:
        state_copy.check_server(url, timeout_s=1.0)
    assert "Connection refused" in str(checked.value) and "sekrit-pw" not in str(checked.value)
    assert "\n" not in str(checked.value)
    started = time.monotonic()
    with pytest.raises(StateUnavailable) as copying:  # the pool gives up after its timeout: no retry forever
        copy_store("query log", tmp_path / FILES["query log"], url, timeout_s=1.0)
    assert time.monotonic() - started < 10 and "sekrit-pw" not in str(copying.value)


@pytest.mark.parametrize("url", ["mysql://root:sekrit-pw@db/state", "sqlite:///state.db", "localhost:5432"])
def test_a_target_that_is_not_postgresql_is_refused(url: str) -> None:
    with pytest.raises(state_copy.InvalidTarget) as refused:
        state_copy.check_server(url, timeout_s=1.0)
    assert "sekrit-pw" not in str(refused.value)


def test_a_refused_login_is_unavailable_without_the_password(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database().replace(postgres_server.password, "wrong-sekrit-pw")
    with pytest.raises(StateUnavailable) as refused:
        state_copy.check_server(url, timeout_s=5.0)
    assert "password authentication failed" in str(refused.value) and "wrong-sekrit-pw" not in str(refused.value)
