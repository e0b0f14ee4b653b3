"""`gristmill state migrate`: the SQLite state of GRISTMILL_DATA_DIR (or `--from DIR`) copied into a real
PostgreSQL server, once (a second run copies nothing); a missing file skipped and not created; a URL that is not
PostgreSQL's, or a server nobody listens for, refused on one line without the password or a traceback; so is a
database that already holds data of its own (workers started on it first), before anything is copied."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from streams import cli
from streams.devtools.postgres_server import PostgresServer, free_port
from streams.state.postgres import PostgresDatabase
from streams.state.query_log import QueryLog
from streams.state.training_pairs import TrainingPairs
from tests.streams.state.test_state_copy import build_sqlite_state

runner = CliRunner()


def migrate(monkeypatch: pytest.MonkeyPatch, data_dir: Path, *args: str, database_url: str | None = None) -> Result:
    for name in [name for name in os.environ if name.startswith("GRISTMILL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    if database_url is not None:
        monkeypatch.setenv("GRISTMILL_DATABASE_URL", database_url)
    return runner.invoke(cli.app, ["state", "migrate", *args])


def test_migrate_copies_the_data_dir_once_and_a_second_run_copies_nothing(
        tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    build_sqlite_state(tmp_path)
    url = postgres_server.new_database()
    first = migrate(monkeypatch, tmp_path, "--to", url)
    assert first.exit_code == 0, first.output
    assert postgres_server.password not in first.output and "postgres:***@" in first.output
    assert "query log: 5 rows copied, 0 already there (queries.sqlite3 -> schema gristmill_query_log)" in first.output
    assert "evaluation store: 9 rows copied, 0 already there" in first.output
    assert "feedback state: queries" not in first.output and "query log: queries" in first.output  # progress rows
    second = migrate(monkeypatch, tmp_path, database_url=url)  # --to from GRISTMILL_DATABASE_URL
    assert second.exit_code == 0, second.output
    assert "query log: 0 rows copied, 5 already there" in second.output
    assert "evaluation store: 0 rows copied, 9 already there" in second.output
    queries, feedback = PostgresDatabase(url, "query log"), PostgresDatabase(url, "feedback state")
    try:
        assert QueryLog(queries).count() == 5 and len(TrainingPairs(feedback).retrains()) == 2
    finally:
        queries.close()
        feedback.close()


def test_migrate_into_a_database_workers_already_wrote_to_is_refused_on_one_line_and_copies_nothing(
        tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker compose up -d` before the migration: a worker recorded a training in the empty database. Its rowid 1
    is the file's first training's too: merged, the file's would be taken for already there."""
    build_sqlite_state(tmp_path)
    url = postgres_server.new_database()
    feedback, queries = PostgresDatabase(url, "feedback state"), PostgresDatabase(url, "query log")
    try:
        TrainingPairs(feedback).record_training(900.0, "v9", "promoted", "drift", pairs_sequence=0)
        result = migrate(monkeypatch, tmp_path, "--to", url)
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert len(lines) == 2 and lines[0].startswith("copying the SQLite state in"), lines
        assert lines[1].startswith(f"cannot migrate: feedback state: the PostgreSQL state already holds data not "
                                   f"copied from {(tmp_path / 'feedback.sqlite3').resolve()} (schema "
                                   f"gristmill_feedback: trainings: 1 rows, none copied from it)")
        assert lines[1].endswith("migrate into an empty database (stop the workers first, then drop schema "
                                 "gristmill_feedback or use a new database)")
        # checked before anything was copied: not even the query log, which nobody wrote to
        assert QueryLog(queries).count() == 0 and len(TrainingPairs(feedback).trainings()) == 1
    finally:
        queries.close()
        feedback.close()


def test_migrate_from_a_directory_skips_a_missing_file_without_creating_it(
        tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    build_sqlite_state(shared)
    (shared / "evaluation.sqlite3").unlink()
    monkeypatch.setenv("GRISTMILL_NAMESPACE", "acme")
    result = migrate(monkeypatch, tmp_path / "elsewhere", "--to", postgres_server.new_database(), "--from",
                     str(shared))
    assert result.exit_code == 0, result.output
    assert "evaluation store: skipped, no " in result.output and not (shared / "evaluation.sqlite3").exists()
    assert "query log: 5 rows copied" in result.output and "schema gristmill_feedback" in result.output
    assert not (tmp_path / "elsewhere").exists()


def test_nothing_to_migrate_is_an_error(tmp_path: Path, postgres_server: PostgresServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    result = migrate(monkeypatch, tmp_path, "--to", postgres_server.new_database())
    assert result.exit_code == 1
    assert result.output.count("skipped, no ") == 3 and "nothing to migrate: no SQLite state in" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["mysql://root:sekrit-pw@db/state", "sqlite:///state.db", "localhost:5432"])
def test_a_url_that_is_not_postgresql_is_refused_on_one_line(url: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    result = migrate(monkeypatch, tmp_path, "--to", url)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("invalid --to: not a PostgreSQL URL") and len(result.output.splitlines()) == 1
    assert "sekrit-pw" not in result.output


def test_an_unreachable_server_is_one_line_without_the_password_or_a_traceback(tmp_path: Path) -> None:
    build_sqlite_state(tmp_path)
    env = {name: value for name, value in os.environ.items() if not name.startswith("GRISTMILL_")}
    env.update(GRISTMILL_DATA_DIR=str(tmp_path), GRISTMILL_DATABASE_TIMEOUT_S="1", COLUMNS="200")
    url = f"postgresql://postgres:sekrit-pw@127.0.0.1:{free_port()}/state"
    done = subprocess.run([str(Path(sys.executable).parent / "gristmill"), "state", "migrate", "--to", url],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert lines[0].startswith("copying the SQLite state in") and len(lines) == 2, lines
    assert lines[1].startswith("cannot migrate: cannot reach PostgreSQL at postgresql://postgres:***@127.0.0.1:")
    assert "Connection refused" in lines[1] and "sekrit-pw" not in done.stdout + done.stderr


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path, postgres_server: PostgresServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "queries.sqlite3").write_bytes(b"not a database, whatever its name says" * 100)
    result = migrate(monkeypatch, tmp_path, "--to", postgres_server.new_database())
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == "cannot read the SQLite state: file is not a database"
