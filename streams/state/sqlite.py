"""SQLite files in WAL mode: the durable home of the query log and the feedback state."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_wal_database(path: Path) -> sqlite3.Connection:
    """A SQLite file in WAL mode (durable, no fsync per commit), usable from any thread under a caller's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
