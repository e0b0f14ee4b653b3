"""The CLI and API keys: `gristmill up` refuses to serve HTTP beyond loopback without a keys file (and to start on a
broken one) before anything starts; the commands that call the worker's HTTP API send GRISTMILL_API_KEY, and a
refusal is one line naming it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from aiohttp import web
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.stack import check_http_exposure
from streams.devtools.harness import Harness
from streams.settings import Settings
from streams.web.http import build_http_app

SEARCHER, READER = "search-key-2b7e151628", "read-key-ae2d2a6abf71"
KEYS = {"keys": [{"key": SEARCHER, "name": "searcher", "roles": ["search"]},
                 {"key": READER, "name": "reader", "roles": ["read"]}]}


def gristmill_up(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GRISTMILL_", "KAFKA_", "QDRANT_"))}
    return subprocess.run([sys.executable, "-m", "streams", "up"], capture_output=True, text=True, timeout=120,
                          env={**clean, "GRISTMILL_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "60",
                               "HF_HUB_OFFLINE": "1", **env}, cwd=tmp_path)


def test_up_refuses_to_serve_http_beyond_loopback_without_a_keys_file(tmp_path: Path) -> None:
    done = gristmill_up(tmp_path, GRISTMILL_HTTP_HOST="0.0.0.0")
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, output
    assert len(output.splitlines()) == 1 and "GRISTMILL_API_KEYS_FILE" in output and "0.0.0.0" in output, output
    assert "Traceback" not in output
    data = tmp_path / "data"
    assert not (data / "broker.log").exists() and not (data / "run.json").exists()  # no broker, no worker


def test_up_refuses_a_broken_keys_file_in_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"key": "tiny-secret", "name": "a", "roles": ["read"]}]}))
    done = gristmill_up(tmp_path, GRISTMILL_HTTP_HOST="0.0.0.0", GRISTMILL_API_KEYS_FILE=str(keys))
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and len(output.splitlines()) == 1, output
    assert "keys.json" in output and "keys.0.key" in output and "tiny-secret" not in output, output
    assert "Traceback" not in output and not (tmp_path / "data" / "broker.log").exists()


@pytest.mark.parametrize(("host", "settings", "allowed"), [
    ("127.0.0.1", {}, True), ("localhost", {}, True), ("::1", {}, True), ("127.0.0.2", {}, True),
    ("0.0.0.0", {}, False), ("", {}, False), ("10.0.0.5", {}, False), ("search.internal", {}, False),
    ("0.0.0.0", {"http_allow_open": True}, True), ("0.0.0.0", {"api_keys_file": "keys.json"}, True),
])
def test_only_loopback_serves_without_keys_unless_allowed_open(tmp_path: Path, host: str, settings: dict[str, Any],
                                                              allowed: bool) -> None:
    if "api_keys_file" in settings:
        settings = {**settings, "api_keys_file": tmp_path / "keys.json"}
        (tmp_path / "keys.json").write_text(json.dumps(KEYS))
    config = Settings(data_dir=tmp_path, http_host=host, **settings)
    if allowed:
        check_http_exposure(config)
    else:
        with pytest.raises(typer.Exit) as refused:
            check_http_exposure(config)
        assert refused.value.exit_code == 2


def test_commands_send_GRISTMILL_API_KEY_and_a_refusal_is_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    data = tmp_path / "data"
    data.mkdir()
    runner = CliRunner()

    def gristmill(*args: str, key: str | None = None) -> tuple[int, str]:
        env = {"GRISTMILL_DATA_DIR": str(data), "GRISTMILL_API_KEY": key or "", "COLUMNS": "200"}
        result = runner.invoke(app, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.output

    async def main(running: Harness) -> dict[str, tuple[int, str]]:
        server = web.AppRunner(build_http_app(running))
        await server.setup()
        site = web.TCPSite(server, "127.0.0.1", 0)
        await site.start()
        port = server.addresses[0][1]
        (data / "run.json").write_text(json.dumps({"pid": os.getpid(), "kafka": "nowhere:9092", "agents": [],
                                                   "http": f"http://127.0.0.1:{port}"}))
        try:
            calls = {
                "search": (("search", "green tea", "-k", "1"), SEARCHER),
                "search without a key": (("search", "green tea"), None),
                "search with an unknown key": (("search", "green tea"), "unknown-key-0f1e2d3c4b"),
                "search with a read key": (("search", "green tea"), READER),
                "evaluation": (("evaluation",), READER),
                "evaluation with a search key": (("evaluation",), SEARCHER),
                "experiment status": (("experiment", "status"), READER),
                "status": (("status",), READER),
                "status without a key": (("status",), None),
            }
            return {name: await asyncio.to_thread(gristmill, *args, key=key) for name, (args, key) in calls.items()}
        finally:
            await server.cleanup()

    with Harness(tmp_path, api_keys_file=keys).register("ingest") as running:
        running.send("documents", [{"doc_id": "tea", "version": 1, "op": "upsert", "text": "Green tea is steeped."}])
        got = running.run(main(running))

    for name in ("search", "evaluation", "experiment status", "status"):
        assert got[name][0] == 0, (name, got[name])
    assert "tea" in got["search"][1] and "model   v1" in got["status"][1]
    for name in ("search without a key", "search with an unknown key", "search with a read key",
                 "evaluation with a search key", "status without a key"):
        code, output = got[name]
        refusal = [line for line in output.splitlines() if "refused" in line]
        assert code == 1 and len(refusal) == 1 and "GRISTMILL_API_KEY" in refusal[0], (name, output)
        assert "Traceback" not in output and SEARCHER not in output and READER not in output
    assert "lacks the 'read' role" in got["evaluation with a search key"][1]
