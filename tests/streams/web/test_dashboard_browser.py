"""The built-in dashboard in headless Chromium: real figures appear after events are produced."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from tests.kafka_io import produce

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=8000"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_dashboard_shows_live_numbers_dead_letters_and_queries(tmp_path: Path, registry_dir: Path,
                                                                broker: EmbeddedBroker) -> None:
    worker = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, "dash-ui",
                           GRISTMILL_ADMIN_TOKEN="dash-token").start()
    try:
        docs = [(f"doc-{i}".encode(), (f'{{"doc_id": "doc-{i}", "version": 1, "op": "upsert", '
                                       f'"text": "Note {i} about green tea and kafka partitions."}}').encode())
                for i in range(7)]
        produce(broker.bootstrap_servers, "dash-ui.documents", [*docs, (b"broken", b"{not json")])
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 7, 60, "documents indexed")
        worker.get("/search", q="steeping green tea", k=3)
        worker.wait_for(lambda: worker.get("/api/dashboard")["dead_letters"], 30, "dead letter on the dashboard")

        dom = chromium(tmp_path, "--dump-dom", worker.url + "/")
        assert dom.returncode == 0, dom.stderr[-2000:]
        screenshot = tmp_path / "dashboard.png"
        shot = chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,1400", worker.url + "/")
        assert shot.returncode == 0 and screenshot.stat().st_size > 20_000, shot.stderr[-2000:]
    finally:
        worker.stop()
    html = dom.stdout
    cards = dict(re.findall(r'<div class="card"><small>([^<]+)</small><b>([^<]+)</b>', html))
    assert cards["documents in"] == "8" and cards["indexed documents"] == "7", cards
    assert cards["query latency p50"].endswith("ms") and cards["query latency p50"] != "- ms", cards
    assert "not valid JSON" in html and "{not json" in html  # the dead letter, with its reason
    assert "steeping green tea" in html and "doc-" in html  # the query and its top hit
    assert re.search(r"<td>v1</td>.*serving", html, re.S)
    assert re.search(r'<p id="admin">', html) and "Roll back to the previous model" in html  # token set: actions on
    assert "dash-token" not in html  # the token is typed by the operator, never served
    assert "trainer idle" in html and "serving <b>v1</b> (index v1)" in html
