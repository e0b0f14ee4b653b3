"""A throwaway PostgreSQL server for tests and benchmarks: `initdb` and `pg_ctl` from the installed PostgreSQL
(Debian: `/usr/lib/postgresql/<version>/bin`) in a temporary directory, on a free loopback port, password auth.

PostgreSQL refuses to run as root: as root the cluster is made and run by the `postgres` user (`runuser`).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql as pgsql

from schemas.errors import GristmillError


class PostgresUnavailable(GristmillError):
    """No PostgreSQL server binaries here, or the server would not start (the message says which and why)."""


def server_binaries() -> Path:
    """The directory holding `initdb` and `pg_ctl` (the newest installed version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no "
                              "initdb on PATH): install Debian's `postgresql` package (`make test` does)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """`start()`, `stop()`, `start()` again (same data, same port): a server restart in the middle of a test.
    `url` reaches the `postgres` database as its superuser; `new_database()` makes an empty one."""

    def __init__(self, *, durable: bool = True) -> None:
        self.bin = server_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="gristmill-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.durable = durable  # fsync at commit (benchmarks); tests may trade it for speed
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                   f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        pwfile.unlink()

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str]) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{argv[0]} failed ({done.returncode}): "
                                      f"{(done.stderr or done.stdout).strip()[-2000:]}")

    def start(self) -> PostgresServer:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   f"-c max_connections=200" + ("" if self.durable else " -c fsync=off -c synchronous_commit=off"))
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                   "-o", options, "start"])
        return self

    def stop(self) -> None:
        self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])

    def new_database(self) -> str:
        """An empty database of its own; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        return self.database_url(name)

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        self.close()
