"""`gristmill state migrate`: copy the SQLite state (query log, feedback state, evaluation store) into PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TaskID

from schemas.errors import GristmillError
from streams.cli.context import console, fail, load_settings, progress_bar, styled, untrusted

if TYPE_CHECKING:
    from streams.state.database import StateStore
    from streams.state.state_copy import TableCount

state_app = typer.Typer(help="The state stores: query log, feedback state, evaluation store.", no_args_is_help=True)


def migrate(
    to: Annotated[str, typer.Option(
        "--to", envvar="GRISTMILL_DATABASE_URL", show_envvar=True,
        help="The PostgreSQL database, postgresql://user:password@host:port/db (from GRISTMILL_DATABASE_URL "
             "when not given: the password stays out of the shell history).")],
    source_dir: Annotated[Path | None, typer.Option(
        "--from", file_okay=False, help="Directory of the SQLite files (queries.sqlite3, feedback.sqlite3, "
                                        "evaluation.sqlite3); default GRISTMILL_SHARED_DIR, else "
                                        "GRISTMILL_DATA_DIR.")] = None,
) -> None:
    """Copy the SQLite state into PostgreSQL: into an empty database, with the workers stopped.

    Each row is copied unless its key is there already: run again (after an interruption), it copies only what is
    new. A database that holds data not copied from these files (workers started on it first) is refused, and
    nothing is copied. The SQLite files stay (their schema brought up to date, and an id naming them as the
    source)."""
    import psycopg

    from streams.state import state_copy
    from streams.state.postgres import redacted

    try:
        state_copy.require_postgresql_url(to)
    except state_copy.InvalidTarget as exc:
        raise fail("invalid --to: ", exc, status=2) from None
    settings = load_settings()
    if source_dir is not None:
        settings = settings.model_copy(update={"shared_dir": source_dir})
    sources: dict[StateStore, Path] = {"query log": settings.query_log_path, "feedback state": settings.pairs_path,
                                       "evaluation store": settings.evaluation_path}
    directory = settings.query_log_path.parent
    console.print(untrusted(f"copying the SQLite state in {directory} to {redacted(to)}"
                            + (f" (namespace {settings.namespace})" if settings.namespace else "")), soft_wrap=True)
    copied: list[state_copy.StoreCopied] = []
    pool_log = logging.getLogger("psycopg.pool")
    pool_level = pool_log.level
    pool_log.setLevel(logging.CRITICAL)  # a failure is reported below on one line; the pool's retries need not be
    try:
        state_copy.check_server(to, settings.database_timeout_s)
        for store, path in sources.items():  # every store can be copied, or none is
            with contextlib.suppress(state_copy.MissingSource):
                state_copy.check_target(store, path, to, namespace=settings.namespace,
                                        timeout_s=settings.database_timeout_s,
                                        busy_timeout_s=settings.sqlite_busy_timeout_s)
        with progress_bar() as bar:
            tasks: dict[tuple[str, str], TaskID] = {}

            def show(count: TableCount) -> None:
                key = (count.store, count.table)
                if key not in tasks:
                    tasks[key] = bar.add_task(f"{count.store}: {count.table}", total=count.rows)
                bar.update(tasks[key], completed=count.done)

            for store, path in sources.items():
                try:
                    copied.append(state_copy.copy_store(
                        store, path, to, namespace=settings.namespace, timeout_s=settings.database_timeout_s,
                        busy_timeout_s=settings.sqlite_busy_timeout_s, progress=show))
                except state_copy.MissingSource:
                    bar.console.print(styled(f"{store}: skipped, no ", "yellow", path), soft_wrap=True)
    except GristmillError as exc:  # a server away or refusing the login, a schema too new, a mismatch, a database
        # holding data of its own
        raise fail("cannot migrate: ", state_copy.one_line(exc)) from None
    except psycopg.Error as exc:  # a statement the server refused (e.g. no right to create the schemas)
        raise fail("cannot migrate: ", f"{type(exc).__name__}: {state_copy.one_line(exc)}") from None
    except sqlite3.DatabaseError as exc:  # a corrupt file, or not a database: waiting does not help
        raise fail("cannot read the SQLite state: ", state_copy.one_line(exc)) from None
    finally:
        pool_log.setLevel(pool_level)
    for done in copied:
        console.print(untrusted(f"{done.store}: {done.copied} rows copied, {done.already_there} already there "
                                f"({done.source.name} -> schema {done.schema})"), soft_wrap=True)
    if not copied:
        raise fail("nothing to migrate: ", f"no SQLite state in {directory}")


state_app.command("migrate")(migrate)
