"""PostgreSQL: the state stores of workers on many machines (`GRISTMILL_DATABASE_URL=postgresql://…`).

Each store lives in a schema of its own (`gristmill_query_log`, `gristmill_feedback`, `gristmill_evaluation`,
prefixed by the namespace when one is set), reached through a psycopg connection pool whose connections have that
schema on their search path, so one store's SQL runs unchanged on SQLite and here. Migrations are versioned per
store (`schema_migrations`) and applied under an advisory lock: of several workers starting at once, one migrates
and the others find it done. `serialized` transactions take a per-store advisory lock (the read-decide-write ones:
counters, retrain decisions, experiment starts); plain writes rely on row locks and conditional updates.

A server that cannot be reached, restarts, shuts down, or cancels a statement raises `StateUnavailable`; the
failed connection leaves the pool, and the next try gets a fresh one (each is checked when taken from the pool).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
import weakref
import zlib
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import sql as pgsql
from psycopg.types.string import StrDumperUnknown

from streams.state.database import Schema, TransactionKind
from streams.state.errors import StateSchemaTooNew, StateUnavailable

log = logging.getLogger(__name__)

#: The first key of gristmill's advisory locks (the second names the store's schema): "grml".
LOCK_SPACE = 0x67726D6C

#: How often a pool without connections asks the server directly why.
PROBE_EVERY_S = 5.0

#: A pooled connection used this recently is taken without a liveness check.
RECENTLY_USED_S = 2.0

#: The schema of each store (a namespace, when set, prefixes them: several deployments may share one database).
STORE_SCHEMAS = {"query log": "query_log", "feedback state": "feedback", "evaluation store": "evaluation"}


def redacted(url: str) -> str:
    """The URL without its password (for logs and errors), whether in its user part or its query."""
    parts = urlsplit(url)
    if parts.query:
        parts = parts._replace(query=re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query))
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=netloc[0].split(":", 1)[0] + ":***@" + netloc[1])
    return urlunsplit(parts)


def scrubbed(text: str, url: str) -> str:
    """`text` without the URL's password (a driver's message may quote the connection string)."""
    password = urlsplit(url).password
    found = re.search(r"(?i)(?:^|&)password=([^&]*)", urlsplit(url).query)
    for secret in (password, found.group(1) if found else None):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text.replace(url, redacted(url))


def schema_name(store: str, namespace: str = "") -> str:
    """The store's schema: `gristmill_<store>`, prefixed by the namespace. A namespace that is not already a short
    lowercase identifier is made one and suffixed by its hash (`a-b` and `a_b` never share a schema; every name
    fits PostgreSQL's 63 characters)."""
    prefix = namespace
    if not re.fullmatch(r"[a-z0-9_]{0,32}", namespace) or namespace.startswith("pg"):  # pg_*: PostgreSQL's own
        prefix = "ns_" + re.sub(r"[^a-z0-9_]", "_", namespace.lower())[:29] + f"_{zlib.crc32(namespace.encode()):08x}"
    return f"{prefix + '_' if prefix else ''}gristmill_{STORE_SCHEMAS[store]}"


@functools.lru_cache(maxsize=512)
def placeholders(statement: str) -> str:
    """`?` placeholders as psycopg's `%s` (the stores' SQL holds no `?` or `%` inside string literals)."""
    return statement.replace("%", "%%").replace("?", "%s")


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the server cannot be used now (retry later) rather than that the statement is wrong:
    psycopg's OperationalError covers connection failures and SQLSTATE classes 08 (connection), 40 (serialization,
    deadlock), 53 (resources), 55 (lock not available), 57 (shutdown, statement timeout), 58 (system error); a
    server that turned read-only (25006: a failover under way, a standby) is one too."""
    return isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout | psycopg.errors.ReadOnlySqlTransaction)


class NulFreeText(StrDumperUnknown):
    """Text as PostgreSQL can hold it: NUL (which `TEXT` refuses, and SQLite keeps) becomes U+FFFD."""

    def dump(self, obj: str) -> bytes:  # type: ignore[override]
        return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)  # type: ignore[no-any-return]


def configure_connection(connection: psycopg.Connection[Any]) -> None:
    connection.adapters.register_dumper(str, NulFreeText)


class _Connection:
    """A transaction's connection, speaking the stores' `?` placeholders."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def execute(self, statement: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._connection.execute(placeholders(statement), tuple(params))  # type: ignore[arg-type]

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self._connection.cursor()
        cursor.executemany(placeholders(statement), [tuple(row) for row in rows])  # type: ignore[arg-type]
        return cursor


class PostgresDatabase:
    """One store's schema in a PostgreSQL database, through a pool of its own (`pool_size` connections at most,
    opened as needed). Commits are durable when acknowledged (the server's `synchronous_commit`, on by default)."""

    dialect = "postgresql"

    def __init__(self, url: str, store: str, *, namespace: str = "", pool_size: int = 4,
                 connect_timeout_s: float = 5.0, startup_wait_s: float = 0.0, statement_timeout_s: float = 60.0
                 ) -> None:
        """`startup_wait_s`: how long `ensure` waits for a server that cannot be reached yet (a worker started
        beside its database) before it fails. `statement_timeout_s` bounds every statement and lock wait (a hung
        server, a lock held by a worker cut off from it: an outage after that long, never a hang); a session idle
        inside a transaction that long is ended by the server, and TCP keepalives find a dead peer within ~30 s."""
        self.url = url
        self.store = store
        self.schema = schema_name(store, namespace)
        self.connect_timeout_s = connect_timeout_s
        self.startup_wait_s = startup_wait_s
        self._probed_at = float("-inf")
        self._probe_error: BaseException | None = None
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()
        # this store's advisory lock: gristmill's key space, then the schema's
        self._lock_key = (LOCK_SPACE, zlib.crc32(self.schema.encode()) - 2**31)
        timeout_ms = max(1, round(statement_timeout_s * 1000))
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=0, max_size=pool_size, open=True, timeout=connect_timeout_s,
            # a connection the pool could not make is retried with backoff only this long: then the next
            # operation asks afresh, so a server back after an outage is used within seconds
            reconnect_timeout=connect_timeout_s,
            check=self._check, reset=self._returned, configure=configure_connection, name=self.schema,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout_s)),
                    "options": f"-c search_path={self.schema} -c statement_timeout={timeout_ms} "
                               f"-c lock_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}",
                    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                    "tcp_user_timeout": 30_000, "application_name": "gristmill"})

    @contextlib.contextmanager
    def unavailable_as_typed(self) -> Iterator[None]:
        try:
            yield
        except psycopg_pool.PoolTimeout as exc:  # no connection: say why (unreachable, a wrong password, ...)
            reason = self._why_no_connection()
            raise StateUnavailable(self.store, f"{self.store} (PostgreSQL {redacted(self.url)}, schema "
                                               f"{self.schema}): {scrubbed(str(reason or exc), self.url)}") from exc
        except psycopg.Error as exc:
            if not unavailable(exc):
                raise
            raise StateUnavailable(self.store, f"{self.store} (PostgreSQL {redacted(self.url)}, schema "
                                               f"{self.schema}): {type(exc).__name__}: "
                                               f"{scrubbed(str(exc), self.url)}".strip()) from exc

    def _why_no_connection(self) -> BaseException | None:
        """Why the pool has no connection to give: when it holds none (the server refuses or cannot be reached,
        not a busy pool), the error of one direct attempt — at most one every `PROBE_EVERY_S`, the last reused."""
        if self._pool.get_stats().get("pool_size", 0) > 0:
            return None  # connections exist, all busy
        now = time.monotonic()
        if now - self._probed_at >= PROBE_EVERY_S:
            self._probed_at = now
            try:
                psycopg.connect(self.url, connect_timeout=max(1, round(self.connect_timeout_s))).close()
                self._probe_error = None
            except psycopg.Error as exc:
                self._probe_error = exc
        return self._probe_error

    def _returned(self, connection: psycopg.Connection[Any]) -> None:
        self._returned_at[connection] = time.monotonic()

    def _check(self, connection: psycopg.Connection[Any]) -> None:
        """Before a pooled connection is used: one idle for a while is checked (a server restarted meanwhile
        closed it) and replaced when dead; one used moments ago is not (no extra round trip on a busy path)."""
        if time.monotonic() - self._returned_at.get(connection, float("-inf")) > RECENTLY_USED_S:
            psycopg_pool.ConnectionPool.check_connection(connection)

    def ensure(self, schema: Schema) -> None:
        """Apply the migrations not applied yet, each once, in order, in one transaction under this store's lock
        (several workers starting together: the first migrates, the others wait and find it done). A server not
        reachable yet is waited for up to `startup_wait_s`."""
        deadline = time.monotonic() + self.startup_wait_s
        while True:
            try:
                return self._migrate(schema)
            except StateUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("waiting for PostgreSQL: %s", exc)
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    def _migrate(self, schema: Schema) -> None:
        with self.unavailable_as_typed(), self._pool.connection() as connection, connection.transaction():
            connection.execute("SET LOCAL statement_timeout = 0")  # a migration takes as long as it needs
            connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._lock_key)
            connection.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(self.schema)))
            connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                               "applied_at DOUBLE PRECISION NOT NULL)")
            applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
            newer = max(applied, default=0) - len(schema.postgresql)
            if newer > 0:
                raise StateSchemaTooNew(f"{self.store}: schema {self.schema} is at migration "
                                                    f"{max(applied)}, newer than this release knows "
                                                    f"({len(schema.postgresql)}); upgrade gristmill")
            for version, migration in enumerate(schema.postgresql, start=1):
                if version not in applied:
                    connection.execute(migration)  # type: ignore[call-overload]
                    connection.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, time.time()))

    def migrations(self) -> list[int]:
        """The versions applied to this store's schema."""
        return [row[0] for row in self.fetchall("SELECT version FROM schema_migrations ORDER BY version")]

    @contextlib.contextmanager
    def transaction(self, kind: TransactionKind = "serialized") -> Iterator[_Connection]:
        with self.unavailable_as_typed(), self._pool.connection() as connection, connection.transaction():
            if kind == "serialized":
                connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._lock_key)
            elif kind == "read":  # one snapshot for the whole transaction
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            elif kind == "maintenance":  # as long as it takes (the session's lock and idle timeouts still hold)
                connection.execute("SET LOCAL statement_timeout = 0")
            yield _Connection(connection)

    def execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        with self.unavailable_as_typed(), self._pool.connection() as connection:
            return connection.execute(placeholders(statement), tuple(params)).rowcount  # type: ignore[arg-type]

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.unavailable_as_typed(), self._pool.connection() as connection:
            return connection.execute(placeholders(statement), tuple(params)).fetchall()  # type: ignore[arg-type]

    def fetchone(self, statement: str, params: Sequence[Any] = ()) -> Any:
        rows = self.fetchall(statement, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self._pool.close()

