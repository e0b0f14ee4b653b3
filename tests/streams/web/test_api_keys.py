"""API keys over the in-process harness: 401 without a key or with an unknown one, 403 with a key lacking the
route's role, the admin token as a key, open routes (and the liveness answer of /health), Origin null, the keys file
re-read on change and failing closed, strict validation, and /metrics free of query text."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.devtools.harness import Harness
from streams.web.api_keys import InvalidApiKeysFile, read_api_keys
from streams.web.guards import ROUTE_ROLES
from streams.web.http import build_http_app
from streams.web.openapi import OPENAPI

SEARCHER, READER, OPERATOR = "search-key-5f0c1e2d9a", "read-key-77b3e0c4a1d8", "admin-key-c4e1a9b27f30"
ADMIN_TOKEN = "admin-token-9d2e4b6a13"
STRANGER = "not-a-key-0a1b2c3d4e5f"
KEYS = {"keys": [
    {"key": SEARCHER, "name": "searcher", "principals": ["user:sam"], "roles": ["search"]},
    {"key": READER, "name": "reader", "principals": ["user:rita", "group:eng"], "roles": ["read"]},
    {"key": OPERATOR, "name": "operator", "roles": ["admin"]},
]}
DOCS = [{"doc_id": "tea", "version": 1, "op": "upsert", "text": "Green tea is steeped at eighty degrees."}]
ROUTES = {  # one request per role class: (method, path, JSON body)
    "search": [("GET", "/search?q=tea&k=1", None), ("POST", "/search", {"q": "tea", "k": 1}),
               ("POST", "/documents/versions", {"doc_ids": ["tea"]})],
    "read": [("GET", "/api/dashboard", None), ("GET", "/evaluation", None), ("GET", "/experiment", None),
             ("GET", "/documents/tea", None)],
    "admin": [("POST", "/admin/rollback", None), ("POST", "/admin/promote", {"version": "v9"}),
              ("POST", "/admin/experiment/stop", None)],
}
KEY_OF_ROLE = {"search": SEARCHER, "read": READER, "admin": OPERATOR}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_keys(path: Path, keys: Any) -> Path:
    path.write_text(keys if isinstance(keys, str) else json.dumps(keys), encoding="utf-8")
    return path


def serve(tmp_path: Path, scenario: Callable[[TestClient], Awaitable[Any]], **settings: Any) -> Any:
    with Harness(tmp_path, **settings).register("ingest") as running:
        running.send("documents", DOCS)

        async def main() -> Any:
            async with TestClient(TestServer(build_http_app(running))) as client:
                return await scenario(client)
        return running.run(main())


def test_each_route_needs_its_role_and_the_admin_token_has_every_role(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for role, requests in ROUTES.items():
            for method, path, body in requests:
                row = {}
                for who, headers in [("none", {}), ("stranger", bearer(STRANGER)), ("malformed", {"Authorization":
                                     f"Basic {READER}"}), *((r, bearer(k)) for r, k in KEY_OF_ROLE.items()),
                                     ("admin-token", bearer(ADMIN_TOKEN))]:
                    response = await client.request(method, path, json=body, headers=headers)
                    text = await response.text()
                    assert all(key not in text for key in (SEARCHER, READER, OPERATOR, ADMIN_TOKEN, STRANGER))
                    row[who] = (response.status, response.headers.get("WWW-Authenticate", ""))
                seen[f"{method} {path}"] = (role, row)
        return seen

    keys = write_keys(tmp_path / "keys.json", KEYS)
    seen = serve(tmp_path, scenario, api_keys_file=keys, admin_token=ADMIN_TOKEN)
    for request, (role, row) in seen.items():
        for who in ("none", "stranger", "malformed"):
            assert row[who][0] == 401 and row[who][1].startswith("Bearer"), (request, who, row[who])
        for other in set(KEY_OF_ROLE) - {role}:
            assert row[other][0] == 403, (request, other, row[other])
        assert row[role][0] not in (401, 403) and row["admin-token"][0] not in (401, 403), (request, row)
        if role != "admin":
            assert row[role][0] == 200 and row["admin-token"][0] == 200, (request, row)
    assert seen["POST /admin/rollback"][1]["admin"][0] == 409  # reached the handler: nothing to roll back
    assert seen["POST /admin/promote"][1]["admin"][0] == 404  # reached the handler: no such version


def test_open_routes_answer_without_a_key_and_health_says_only_its_status(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in ("/", "/openapi.json", "/metrics", "/health"):
            response = await client.get(path)
            out[path] = (response.status, await response.text())
        out["health as reader"] = await (await client.get("/health", headers=bearer(READER))).json()
        out["health as searcher"] = await (await client.get("/health", headers=bearer(SEARCHER))).json()
        out["unknown path"] = (await client.get("/nowhere")).status
        out["unknown path with a key"] = (await client.get("/nowhere", headers=bearer(SEARCHER))).status
        out["dashboard as reader"] = await (await client.get("/api/dashboard", headers=bearer(READER))).json()
        return out

    out = serve(tmp_path, scenario, api_keys_file=write_keys(tmp_path / "keys.json", KEYS))
    assert {path: out[path][0] for path in ("/", "/openapi.json", "/metrics", "/health")} == {
        "/": 200, "/openapi.json": 200, "/metrics": 200, "/health": 200}
    assert json.loads(out["/health"][1]) == {"status": "ok"}  # liveness only: no versions, sizes, Kafka address
    assert out["health as searcher"] == {"status": "ok"}
    assert out["health as reader"]["index"]["documents"] == 1 and "kafka" in out["health as reader"]
    assert (out["unknown path"], out["unknown path with a key"]) == (401, 404)
    assert out["dashboard as reader"]["caller"] == {"name": "reader", "roles": ["read"]}


def test_without_a_keys_file_reads_stay_open_and_admin_actions_need_the_token(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> list[int]:
        return [(await client.get("/api/dashboard")).status, (await client.get("/search?q=tea")).status,
                (await client.post("/admin/rollback")).status,
                (await client.post("/admin/rollback", headers=bearer(STRANGER))).status,
                (await client.post("/admin/rollback", headers=bearer(ADMIN_TOKEN))).status]

    assert serve(tmp_path / "token", scenario, admin_token=ADMIN_TOKEN) == [200, 200, 401, 401, 409]
    assert serve(tmp_path / "none", scenario) == [200, 200, 403, 403, 403]  # admin actions disabled


@pytest.mark.parametrize("with_keys", [False, True])
def test_origin_null_is_refused(tmp_path: Path, with_keys: bool) -> None:
    async def scenario(client: TestClient) -> list[int]:
        statuses = []
        for origin in ("null", "NULL", "http://127.0.0.1:6066"):
            response = await client.get("/api/dashboard", headers={"Origin": origin, **bearer(READER)})
            statuses.append(response.status)
        return statuses

    settings = {"api_keys_file": write_keys(tmp_path / "keys.json", KEYS)} if with_keys else {}
    assert serve(tmp_path, scenario, **settings) == [403, 403, 200]


def test_a_key_removed_from_the_file_is_refused_without_a_restart(tmp_path: Path) -> None:
    keys = write_keys(tmp_path / "keys.json", KEYS)
    newcomer = "newcomer-key-1e7d3a5c90"

    async def scenario(client: TestClient) -> list[int]:
        before = (await client.get("/api/dashboard", headers=bearer(READER))).status
        write_keys(keys, {"keys": [{"key": newcomer, "name": "newcomer", "roles": ["read"]}]})
        await asyncio.sleep(1.1)  # the file is looked at about once a second
        return [before, (await client.get("/api/dashboard", headers=bearer(READER))).status,
                (await client.get("/api/dashboard", headers=bearer(newcomer))).status]

    assert serve(tmp_path, scenario, api_keys_file=keys) == [200, 401, 200]


def test_a_keys_file_that_becomes_invalid_fails_closed_until_fixed(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    keys = write_keys(tmp_path / "keys.json", KEYS)

    async def scenario(client: TestClient) -> list[int]:
        statuses = [(await client.get("/api/dashboard", headers=bearer(READER))).status]
        write_keys(keys, '{"keys": [{"key": "' + READER + '", "name": "reader", "roles": ["read"]')  # cut short
        await asyncio.sleep(1.1)
        statuses.append((await client.get("/api/dashboard", headers=bearer(READER))).status)
        statuses.append((await client.get("/search?q=tea", headers=bearer(SEARCHER))).status)
        write_keys(keys, KEYS)
        await asyncio.sleep(1.1)
        statuses.append((await client.get("/api/dashboard", headers=bearer(READER))).status)
        return statuses

    with caplog.at_level(logging.DEBUG):
        assert serve(tmp_path, scenario, api_keys_file=keys) == [200, 401, 401, 200]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keys.json" in warnings[0]
    assert all(key not in caplog.text for key in (SEARCHER, READER, OPERATOR))


@pytest.mark.parametrize(("content", "problem"), [
    ({"keys": [{"key": "short-key", "name": "a", "roles": ["read"]}]}, "at least 16 characters"),
    ({"keys": [{"key": "", "name": "a", "roles": ["read"]}]}, "at least 16 characters"),
    ({"keys": [{"key": "k" * 20, "name": "a", "roles": ["superuser"]}]}, "keys.0.roles.0"),
    ({"keys": [{"key": "k" * 20, "name": "a", "roles": []}]}, "keys.0.roles"),
    ({"keys": [{"key": "k" * 20, "name": "a", "roles": ["read"]},
               {"key": "k" * 20, "name": "b", "roles": ["read"]}]}, "'a' and 'b' are the same"),
    ({"keys": [{"key": "k" * 20, "name": "a", "roles": ["read"]},
               {"key": "m" * 20, "name": "a", "roles": ["read"]}]}, "'a' is given to more than one key"),
    ({"keys": [{"key": "k" * 20, "name": "a", "roles": ["read"], "expires": 1}]}, "keys.0.expires"),
    ({"keys": [{"key": "k k k k k k k k k k", "name": "a", "roles": ["read"]}]}, "no spaces"),
    ('{"keys": [', "Invalid JSON"),
    (None, "cannot be read"),
])
def test_an_invalid_keys_file_is_one_typed_line_without_the_keys(tmp_path: Path, content: Any, problem: str) -> None:
    path = tmp_path / "keys.json"
    if content is not None:
        write_keys(path, content)
    with pytest.raises(InvalidApiKeysFile) as refused:
        read_api_keys(path)
    message = str(refused.value)
    assert problem in message and str(path) in message and "\n" not in message, message
    assert "k" * 20 not in message and "m" * 20 not in message and "short-key" not in message


def test_a_worker_does_not_start_serving_on_an_invalid_keys_file(tmp_path: Path) -> None:
    keys = write_keys(tmp_path / "keys.json", {"keys": [{"key": "short", "name": "a", "roles": ["read"]}]})
    with Harness(tmp_path, api_keys_file=keys) as running, pytest.raises(InvalidApiKeysFile):
        build_http_app(running)


def test_metrics_never_carry_query_text(tmp_path: Path) -> None:
    distinctive = "quokka zanzibar xylograph teapot"  # no digits: numbers turn up in metric values

    async def scenario(client: TestClient) -> tuple[str, list[int], str, str]:
        before = await (await client.get("/metrics")).text()
        statuses = [(await client.get("/search", params={"q": distinctive, "k": "1"}, headers=bearer(SEARCHER))).status,
                    (await client.post("/search", json={"q": distinctive + " again"}, headers=bearer(SEARCHER))).status]
        return before, statuses, await (await client.get("/metrics")).text(), await (await client.get("/health")).text()

    def http_queries(page: str) -> float:
        return float(re.search(r'^gristmill_queries_total\{via="http"\} (\S+)$', page, re.M).group(1))  # type: ignore

    before, statuses, metrics, health = serve(tmp_path, scenario,
                                              api_keys_file=write_keys(tmp_path / "keys.json", KEYS))
    assert statuses == [200, 200] and http_queries(metrics) - http_queries(before) == 2  # counted, and scraped
    for word in ("quokka", "zanzibar", "xylograph", "teapot"):
        assert word not in metrics and word not in health


def test_every_route_has_a_role_and_openapi_declares_it(tmp_path: Path) -> None:
    with Harness(tmp_path) as running:
        app = build_http_app(running)
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    assert routes == set(ROUTE_ROLES)
    scheme = OPENAPI["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for (method, path), role in ROUTE_ROLES.items():
        operation = OPENAPI["paths"][path][method.lower()]
        if role is None:
            assert operation["security"] == [] or {} in operation["security"], path  # anonymous allowed
        else:
            assert operation["security"] == [{"apiKey": [role]}] and "401" in operation["responses"], path
