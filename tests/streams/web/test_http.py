"""The HTTP API over the in-process harness: caps, typed filters, a failing search that fails alone, the Host and
Origin allow-list, header and body deadlines, health, and what the dashboard shows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.devtools.harness import Harness
from streams.ml.serving import serving_pair
from streams.settings import Settings
from streams.state.hashing_encoder import HashingEncoder
from streams.state.memory_store import InMemoryVectorStore
from streams.state.store import PUBLIC
from streams.web.dashboard import dashboard_state
from streams.web.guards import GuardedSite
from streams.web.http import build_http_app
from tests.polling import eventually

DOCS = [{"doc_id": "tea", "version": 1, "op": "upsert", "text": "Green tea is steeped at eighty degrees."},
        {"doc_id": "bikes", "version": 1, "op": "upsert", "text": "Oil the bicycle chain.", "source": "workshop"}]


class ExplodingStore(InMemoryVectorStore):
    def search(self, query, limit, filter_=None, access=PUBLIC):  # type: ignore[no-untyped-def]
        if (filter_ or {}).get("source") == "boom":
            raise ValueError("the store cannot answer this search")
        return super().search(query, limit, filter_, access)


def harness(tmp_path: Path, **settings: Any) -> Harness:
    config = Settings(data_dir=tmp_path, **settings)
    store = ExplodingStore("chunks", 64)
    opener = lambda model: serving_pair(config, model, HashingEncoder(model.version, 64), store)  # noqa: E731
    running = Harness(tmp_path, opener=opener, **settings).register("ingest")
    running.send("documents", DOCS)
    return running


def with_client(running: Harness, scenario: Callable[[TestClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with TestClient(TestServer(build_http_app(running))) as client:
            return await scenario(client)
    return running.run(main())


def test_oversized_queries_and_mistyped_filters_are_refused_with_a_message(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> list[tuple[int, str]]:
        out = []
        for method, path, body in [("GET", "/search?q=" + "x" * 4_001, None),
                                   ("GET", "/search?q=tea&version=abc", None),
                                   ("POST", "/search", {"q": "tea", "filter": {"version": 1.5}}),
                                   ("POST", "/search", {"q": "tea", "filter": {"source": ["a", "b"]}}),
                                   ("POST", "/search", {"q": "tea", "filter": {"version": None}}),
                                   ("GET", "/search?q=tea&version=1", None)]:
            response = await client.request(method, path, json=body)
            out.append((response.status, (await response.json()).get("error", "")))
        return out

    with harness(tmp_path) as running:
        results = with_client(running, scenario)
    assert [status for status, _ in results] == [413, 400, 400, 400, 400, 200]
    assert "4,001 characters" in results[0][1] and "'version' must be an integer" in results[2][1]


def test_a_search_that_fails_fails_alone_in_its_micro_batch(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> list[int]:
        bodies = [{"q": "green tea", "k": 1}] * 3 + [{"q": "green tea", "filter": {"source": "boom"}}] + \
                 [{"q": "bicycle chain", "k": 1}] * 4
        responses = await asyncio.gather(*(client.post("/search", json=body) for body in bodies))
        return [response.status for response in responses]

    with harness(tmp_path) as running:
        assert with_client(running, scenario) == [200, 200, 200, 500, 200, 200, 200, 200]


def test_only_allowed_hosts_and_origins_are_answered(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> list[int]:
        statuses = []
        for headers in [{"Host": "attacker.example"}, {"Host": "localhost:6066"}, {"Host": "10.1.2.3:6066"},
                        {"Host": "[::1]:6066"}, {"Host": "127.0.0.1", "Origin": "https://attacker.example"},
                        {"Host": "127.0.0.1", "Origin": "http://localhost:6066"}, {"Host": "search.internal"}]:
            response = await client.get("/api/dashboard", headers=headers)
            statuses.append(response.status)
        return statuses

    with harness(tmp_path, http_allowed_hosts="search.internal") as running:
        assert with_client(running, scenario) == [403, 200, 200, 200, 403, 200, 200]


def test_slow_headers_and_slow_bodies_are_cut_off(tmp_path: Path) -> None:
    async def scenario(running: Harness) -> tuple[bytes, bytes, bytes]:
        runner = web.AppRunner(build_http_app(running), keepalive_timeout=5)
        await runner.setup()
        site = GuardedSite(runner, "127.0.0.1", 0, header_timeout_s=0.3)
        await site.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and never the end of the headers
            slow_headers = await asyncio.wait_for(reader.read(), 5)
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"q\": ")  # ... and never the rest of the body
            slow_body = await asyncio.wait_for(reader.readuntil(b"}"), 5)
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            healthy = await asyncio.wait_for(reader.readuntil(b"}"), 5)
            return slow_headers, slow_body, healthy
        finally:
            await runner.cleanup()

    with harness(tmp_path, http_body_timeout_s=0.3) as running:
        slow_headers, slow_body, healthy = running.run(scenario(running))
    assert slow_headers == b""  # closed without an answer
    assert b"400" in slow_body.split(b"\r\n")[0] and b"did not arrive" in slow_body
    assert healthy.startswith(b"HTTP/1.1 200")


def test_health_names_a_crash_looping_agent_and_the_dashboard_shows_bounded_text(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
        await client.post("/search", json={"q": "tea " * 900, "k": 1})
        running.shared.health.crashed("query", RuntimeError("boom"))
        health = await (await client.get("/health")).json()

        async def read_dashboard() -> dict[str, Any]:  # the answer is logged after it was sent
            return await (await client.get("/api/dashboard")).json()

        return health, await eventually(read_dashboard, lambda body: body["recent_queries"])

    with harness(tmp_path) as running:
        health, dashboard = with_client(running, scenario)
        logged = running.shared.query_log.recent(1)[0]
        state = dashboard_state(running.shared, trains=False)
    assert health["status"] == "degraded" and health["degraded_agents"] == ["query"]
    assert health["agents"]["query"]["last_error"] == "RuntimeError: boom"
    assert len(dashboard["recent_queries"][0]["text"]) <= 201 and state["degraded_agents"] == ["query"]
    assert len(logged.query["text"]) <= running.settings.query_log_text_chars + 1


def test_answers_are_logged_after_they_are_sent_and_a_failed_batch_costs_only_itself(tmp_path: Path) -> None:
    with harness(tmp_path) as running:
        log = running.shared.query_log
        record, calls = log.record, []

        def fails_once(entries: Any) -> None:  # a record the store refuses (not an outage): that batch only
            calls.append(len(entries))
            if len(calls) == 1:
                raise RuntimeError("refused")
            record(entries)

        log.record = fails_once  # type: ignore[method-assign]

        async def scenario(client: TestClient) -> list[str]:
            first = await (await client.post("/search", json={"q": "tea", "k": 1})).json()
            await eventually(lambda: asyncio.sleep(0, calls), lambda seen: seen)
            second = await (await client.post("/search", json={"q": "green tea", "k": 1})).json()
            await eventually(lambda: asyncio.sleep(0, log.get(second["query_id"])), lambda row: row)
            return [first["query_id"], second["query_id"]]

        first, second = with_client(running, scenario)
        assert log.get(first) is None and log.get(second) is not None  # the writer went on after the failure
        assert {a.query_id for a in running.shared.evaluation.answers()} == {second}


def test_metadata_filters_over_get_and_post(tmp_path: Path) -> None:
    notes = [{"doc_id": f"note-{lang}-{year}", "version": 1, "op": "upsert", "text": f"tea note {lang} {year}",
              "metadata": {"lang": lang, "year": year, "reviewed": year > 2021}}
             for lang in ("de", "en") for year in (2020, 2022, 2024)]

    async def scenario(client: TestClient) -> dict[str, Any]:
        async def found(method: str, path: str, body: Any = None) -> Any:
            response = await client.request(method, path, json=body)
            answer = await response.json()
            return sorted(h["doc_id"] for h in answer["hits"]) if response.status == 200 else (response.status,
                                                                                                answer["error"])

        return {
            "lang": await found("GET", "/search?q=tea&k=20&metadata.lang=de"),
            "year": await found("GET", "/search?q=tea&k=20&metadata.year=2022"),  # declared integer
            "reviewed": await found("GET", "/search?q=tea&k=20&metadata.reviewed=true&metadata.lang=en"),
            "bad bool": await found("GET", "/search?q=tea&metadata.reviewed=yes"),
            "bad key": await found("GET", "/search?q=tea&metadata.a.b=1"),
            "range": await found("POST", "/search", {"q": "tea", "k": 20, "filter": {
                "metadata.year": {"gte": 2022}, "metadata.lang": {"any": ["de"]}}}),
            "mixed": await found("POST", "/search", {"q": "tea", "filter": {"metadata.year": {"gte": 1, "lt": "x"}}}),
        }

    with harness(tmp_path, metadata_indexes="year:integer,reviewed:bool") as running:
        running.send("documents", notes)
        got = with_client(running, scenario)
    assert got["lang"] == ["note-de-2020", "note-de-2022", "note-de-2024"]
    assert got["year"] == ["note-de-2022", "note-en-2022"]
    assert got["reviewed"] == ["note-en-2022", "note-en-2024"]
    assert got["bad bool"][0] == 400 and "true or false" in got["bad bool"][1]
    assert got["bad key"][0] == 400 and "cannot filter on" in got["bad key"][1]
    assert got["range"] == ["note-de-2022", "note-de-2024"]
    assert got["mixed"][0] == 400 and "a range is over numbers or ISO-8601 dates" in got["mixed"][1]
