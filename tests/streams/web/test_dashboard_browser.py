"""The built-in dashboard in headless Chromium: real figures appear after events are produced; with a keys file the
page asks for a key and keeps it in sessionStorage only."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streams.broker import EmbeddedBroker
from streams.devtools.harness import Harness
from streams.devtools.worker_process import WorkerProcess
from streams.web.http import build_http_app
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
        secret = (b"secret", b'{"doc_id": "secret", "version": 1, "op": "upsert", "text": "the salary of the hr team",'
                             b' "acl": ["group hr"]}')  # an invalid principal: a dead letter with private text
        produce(broker.bootstrap_servers, "dash-ui.documents", [*docs, secret])
        produce(broker.bootstrap_servers, "dash-ui.queries", [(b"broken", b"{not json")])
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 7, 60, "documents indexed")
        worker.get("/search", q="steeping green tea", k=3)
        worker.wait_for(lambda: worker.get("/api/dashboard")["recent_queries"], 30, "the query logged")
        worker.wait_for(lambda: len(worker.get("/api/dashboard")["dead_letters"]) == 2, 30, "dead letters shown")

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
    assert "withheld: a document" in html and "salary" not in html  # a document's text: admin callers only
    assert "steeping green tea" in html and "doc-" in html  # the query and its top hit
    assert re.search(r"<td>v1</td>.*serving", html, re.S)
    assert re.search(r'<p id="admin">', html) and "Roll back to the previous model" in html  # token set: actions on
    assert "dash-token" not in html  # the token is typed by the operator, never served
    assert "trainer idle" in html and "serving <b>v1</b> (index v1)" in html


class DevTools:
    """Just enough of the Chrome DevTools protocol to run JavaScript in a page and read the answer."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.sent = 0

    async def call(self, method: str, until_event: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command; its result (after `until_event` arrived, when named)."""
        self.sent += 1
        await self.socket.send_json({"id": self.sent, "method": method, "params": params})
        result: dict[str, Any] | None = None
        while result is None or until_event is not None:
            message = await self.socket.receive_json(timeout=60)
            if message.get("id") == self.sent:
                assert "error" not in message, message
                result = message["result"]
            elif until_event is not None and message.get("method") == until_event:
                until_event = None
        return result

    async def open(self, url: str) -> None:
        await self.call("Page.enable")
        await self.call("Page.navigate", until_event="Page.loadEventFired", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, condition: str, timeout_ms: int = 20_000) -> None:
        await self.evaluate(f"""new Promise((resolve, reject) => {{
          const started = Date.now();
          const holds = () => {{ try {{ return Boolean({condition}); }} catch (error) {{ return false; }} }};
          const poll = () => holds() ? resolve(true)
            : Date.now() - started > {timeout_ms} ? reject(new Error("timed out: " + {json.dumps(condition)}))
            : setTimeout(poll, 50);
          poll(); }})""")


async def devtools_page(profile: Path, url: str) -> tuple[asyncio.subprocess.Process, aiohttp.ClientSession,
                                                           DevTools]:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium"
    browser = await asyncio.create_subprocess_exec(
        binary, *CHROMIUM_FLAGS[:-1], "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    for _ in range(600):
        if port_file.exists() and port_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    port = int(port_file.read_text().split()[0])
    session = aiohttp.ClientSession()
    async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
        page = next(t for t in await response.json() if t["type"] == "page")
    devtools = DevTools(await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0))
    await devtools.open(url)
    return browser, session, devtools


def test_dashboard_asks_for_a_key_and_keeps_it_for_the_tab_only(tmp_path: Path) -> None:
    reader, admin = "dashboard-read-key-41d9c3", "dashboard-admin-key-b70e5f"
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"key": reader, "name": "reader", "roles": ["read"]},
                                         {"key": admin, "name": "operator", "roles": ["read", "search", "admin"]}]}))

    async def scenario(running: Harness) -> dict[str, Any]:
        server = web.AppRunner(build_http_app(running))
        await server.setup()
        await web.TCPSite(server, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{server.addresses[0][1]}/"
        async with aiohttp.ClientSession() as client:
            await client.get(url + "search", params={"q": "steeping oolong leaves"},
                             headers={"Authorization": f"Bearer {admin}"})
        browser, session, page = await devtools_page(tmp_path / "profile", url)
        try:
            await page.wait_for("!document.getElementById('login').hidden")
            seen: dict[str, Any] = {"before": await page.evaluate(
                "({data_hidden: document.getElementById('data').hidden, html: document.body.innerHTML})")}
            await page.evaluate(f"document.getElementById('key').value = {json.dumps(reader)};"
                                "document.getElementById('login').requestSubmit()")
            await page.wait_for("document.getElementById('queries').textContent.includes('steeping oolong')")
            seen["after"] = await page.evaluate(
                "({session: sessionStorage.getItem('gristmill-api-key'), local: localStorage.length, "
                "href: location.href, login_hidden: document.getElementById('login').hidden, "
                "who: document.getElementById('who').textContent, "
                "admin_hidden: document.getElementById('admin').hidden, "
                "key_field: document.getElementById('key').value})")
            return seen
        finally:
            await session.close()
            browser.kill()
            await browser.wait()
            await server.cleanup()

    with Harness(tmp_path / "data", api_keys_file=keys).register("ingest") as running:
        running.send("documents", [{"doc_id": "tea", "version": 1, "op": "upsert", "text": "Steep oolong at 90C."}])
        seen = running.run(scenario(running))
    before, after = seen["before"], seen["after"]
    assert before["data_hidden"] and "steeping oolong" not in before["html"]  # nothing shown without a key
    assert after["session"] == reader and after["local"] == 0 and reader not in after["href"]
    assert after["login_hidden"] and after["who"] == "key reader (read)" and after["key_field"] == ""
    assert after["admin_hidden"]  # a read key gets no admin buttons
