"""The PostgreSQL backend of the state stores: migrations applied once under concurrent starts, a server away is
an outage (typed, retried) and a wrong statement a bug, the pool recovers after a server restart, and no error
shows the password."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from pydantic import ValidationError

from streams.devtools.postgres_server import PostgresServer
from streams.settings import Settings
from streams.state.errors import StateSchemaTooNew, StateUnavailable
from streams.state.evaluation_store import SCHEMA as EVALUATION_SCHEMA
from streams.state.evaluation_store import EvaluationStore
from streams.state.postgres import PostgresDatabase, redacted, schema_name
from streams.state.query_log import SCHEMA as QUERY_LOG_SCHEMA
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.training_pairs import SCHEMA as FEEDBACK_SCHEMA


def logged(query_id: str) -> LoggedQuery:
    return LoggedQuery(query_id, {"text": "q"}, {"hits": [], "model_version": "v1", "index_version": "v1"}, 1.0,
                       "kafka")


def test_workers_starting_together_apply_each_migration_once(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    schemas = {"query log": QUERY_LOG_SCHEMA, "feedback state": FEEDBACK_SCHEMA,
               "evaluation store": EVALUATION_SCHEMA}
    errors: list[BaseException] = []
    starters = [store for store in schemas for _ in range(3)]  # three workers of each store at once
    start = threading.Barrier(len(starters))

    def worker_start(store: str) -> None:
        database = PostgresDatabase(url, store)
        try:
            start.wait()
            database.ensure(schemas[store])
        except BaseException as exc:  # collected: asserted below
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=worker_start, args=(store,)) for store in starters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for store, schema in schemas.items():
        database = PostgresDatabase(url, store)
        try:
            assert database.migrations() == list(range(1, len(schema.postgresql) + 1))
        finally:
            database.close()


def test_each_store_has_its_own_schema_and_a_namespace_prefixes_them(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    first, other = (QueryLog(PostgresDatabase(url, "query log", namespace=ns)) for ns in ("", "Team-B"))
    try:
        first.record([logged("q1")])
        assert (first.count(), other.count()) == (1, 0)  # two deployments in one database never mix
        with psycopg.connect(url) as connection:
            tables = {row[0] for row in connection.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_schema LIKE '%%gristmill%%'")}
        assert {"gristmill_query_log.queries", f"{schema_name('query log', 'Team-B')}.queries"} <= tables
    finally:
        first.close()
        other.close()


def test_namespaces_that_read_alike_never_share_a_schema() -> None:
    assert schema_name("query log", "team_b") == "team_b_gristmill_query_log"
    names = {schema_name(store, namespace) for store in ("query log", "feedback state", "evaluation store")
             for namespace in ("a-b", "a_b", "A_b", "a.b", "x" * 80, "x" * 81)}
    assert len(names) == 18 and max(len(name) for name in names) <= 63


def test_a_wrong_statement_is_a_bug_not_an_outage(postgres_server: PostgresServer) -> None:
    database = PostgresDatabase(postgres_server.new_database(), "query log")
    try:
        QueryLog(database)
        with pytest.raises(psycopg.errors.UndefinedColumn):  # retried forever if it were taken for an outage
            database.fetchall("SELECT missing FROM queries")
        with pytest.raises(psycopg.errors.NotNullViolation), database.transaction() as db:
            db.execute("INSERT INTO queries (query_id, query, response, answered_at, via, model_version, "
                       "index_version) VALUES ('a', '{}', '{}', 1, 'kafka', 'v', 'v')")
            db.execute("INSERT INTO queries (query_id) VALUES ('b')")
        assert database.fetchall("SELECT query_id FROM queries") == []  # rolled back whole
    finally:
        database.close()


def test_a_schema_migrated_by_a_newer_release_is_refused(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    database = PostgresDatabase(url, "query log")
    try:
        QueryLog(database)
        database.execute("INSERT INTO schema_migrations VALUES (?, 0)", (len(QUERY_LOG_SCHEMA.postgresql) + 1,))
        with pytest.raises(StateSchemaTooNew):  # not StateUnavailable: waiting would never help
            QueryLog(PostgresDatabase(url, "query log"))
    finally:
        database.close()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and started again."""
    with PostgresServer(durable=False) as server:
        yield server


def test_a_server_away_is_an_outage_and_the_same_store_works_once_it_is_back(own_server: PostgresServer) -> None:
    url = own_server.new_database()
    log = QueryLog(PostgresDatabase(url, "query log", pool_size=2, connect_timeout_s=1.0))
    evaluation = EvaluationStore(PostgresDatabase(url, "evaluation store", connect_timeout_s=1.0))
    try:
        log.record([logged("before")])
        own_server.stop()
        with pytest.raises(StateUnavailable) as away:
            log.record([logged("during")])
        assert away.value.store == "query log"
        assert own_server.password not in str(away.value) and "***" in str(away.value)
        with pytest.raises(StateUnavailable):
            evaluation.experiments()
        own_server.start()
        retried_until_done(lambda: log.record([logged("during")]))  # as the agents retry a store outage
        assert log.count() == 2 and evaluation.experiments() == []  # connections the restart broke were replaced
    finally:
        log.close()
        evaluation.close()


def retried_until_done(operation: Callable[[], object], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            operation()
            return
        except StateUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_urls_are_shown_without_their_password() -> None:
    assert redacted("postgresql://app:s3cr%40t@db:5432/gristmill") == "postgresql://app:***@db:5432/gristmill"
    assert redacted("postgresql://db/gristmill") == "postgresql://db/gristmill"
    assert redacted("postgresql://db/g?sslmode=require&password=hunter2x") == (
        "postgresql://db/g?sslmode=require&password=***")


def test_a_settings_error_never_echoes_the_url() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="mysql://app:hunter2secret@db/g")
    assert "hunter2secret" not in str(refused.value)


def test_a_namespace_never_makes_a_schema_postgresql_reserves() -> None:
    assert not schema_name("query log", "pg").startswith("pg_")
    assert not schema_name("query log", "pg_staging").startswith("pg_")


def test_a_store_opened_before_its_server_is_up_waits_for_it(own_server: PostgresServer) -> None:
    url = own_server.new_database()
    own_server.stop()
    starting = threading.Timer(2.0, own_server.start)  # the database comes up after the worker
    starting.start()
    try:
        log = QueryLog(PostgresDatabase(url, "query log", connect_timeout_s=0.5, startup_wait_s=60.0))
        log.record([logged("first")])
        assert log.count() == 1
        log.close()
    finally:
        starting.join()
    with pytest.raises(StateUnavailable):  # without a wait, a start with the server away fails at once
        own_server.stop()
        QueryLog(PostgresDatabase(url, "query log", connect_timeout_s=0.5))
