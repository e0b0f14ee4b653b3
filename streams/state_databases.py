"""Where the configured state stores live: PostgreSQL when `GRISTMILL_DATABASE_URL` is set, else SQLite files in
the shared directory."""

from __future__ import annotations

from streams.settings import Settings
from streams.state.database import Database, StateStore
from streams.state.sqlite import SqliteDatabase


def open_state_database(settings: Settings, store: StateStore) -> Database:
    """The database `store` keeps its tables in. A PostgreSQL server away at start is waited for (up to
    `database_startup_wait_s`); away later, it fails operations, retried like any store outage."""
    if settings.database_url:
        from streams.state.postgres import PostgresDatabase  # psycopg loads only where PostgreSQL is used

        return PostgresDatabase(settings.database_url, store, namespace=settings.namespace,
                                pool_size=settings.database_pool_size, connect_timeout_s=settings.database_timeout_s,
                                startup_wait_s=settings.database_startup_wait_s,
                                statement_timeout_s=settings.database_statement_timeout_s)
    path = {"query log": settings.query_log_path, "feedback state": settings.pairs_path,
            "evaluation store": settings.evaluation_path}[store]
    return SqliteDatabase(path, store, settings.sqlite_busy_timeout_s)
