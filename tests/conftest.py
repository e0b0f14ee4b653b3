"""Shared fixtures: the exported ONNX model (once per cache), the encoder, and an embedded Tansu broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streams.broker import EmbeddedBroker
from streams.devtools.postgres_server import PostgresServer, PostgresUnavailable
from streams.state.database import Database
from streams.state.encoder import OnnxEncoder
from streams.state.postgres import PostgresDatabase
from streams.state.registry import LocalModelRegistry, ModelVersion, ensure_base_model
from streams.state.sqlite import SqliteDatabase

MODEL_NAME = "minilm"


@pytest.fixture(scope="session")
def registry_dir(request: pytest.FixtureRequest) -> Path:
    """A model registry holding the exported base model; kept in pytest's cache between runs."""
    root = Path(request.config.cache.mkdir("gristmill-models"))
    ensure_base_model(LocalModelRegistry(root, MODEL_NAME))
    return root


@pytest.fixture(scope="session")
def base_model(registry_dir: Path) -> ModelVersion:
    current = LocalModelRegistry(registry_dir, MODEL_NAME).current()
    assert current is not None
    return current


@pytest.fixture(scope="session")
def encoder(base_model: ModelVersion) -> OnnxEncoder:
    return OnnxEncoder(base_model, threads=2)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test session's own (fsync off). Where none can run the tests that need it fail
    with the reason: they are never skipped."""
    try:
        server = PostgresServer(durable=False).start()
    except PostgresUnavailable as exc:
        pytest.fail(f"these tests need a PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.close()


class StateDatabases:
    """Opens a store's database on one backend; each `open` is another process's view of the same data (another
    SQLite connection to the file, another pool to the database)."""

    def __init__(self, backend: str, root: Path, url: str | None) -> None:
        self.backend, self.root, self.url = backend, root, url
        self.opened: list[Database] = []

    def open(self, store: str, *, timeout_s: float = 5.0) -> Database:
        database: Database
        if self.url is not None:
            database = PostgresDatabase(self.url, store, pool_size=4, connect_timeout_s=timeout_s)
        else:
            database = SqliteDatabase(self.root / f"{store.replace(' ', '-')}.sqlite3", store, timeout_s)
        self.opened.append(database)
        return database

    def close(self) -> None:
        for database in self.opened:
            database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateDatabases]:
    """The contract suites of the state stores run once per backend (PostgreSQL: a fresh database per test)."""
    url = request.getfixturevalue("postgres_server").new_database() if request.param == "postgresql" else None
    databases = StateDatabases(request.param, tmp_path, url)
    try:
        yield databases
    finally:
        databases.close()

