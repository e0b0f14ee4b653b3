"""Document permissions over HTTP (the in-process harness): a caller is known by its API key's principals and sees
public documents and those whose acl names one of them — in searches (GET and POST, cached or not), one
document's chunks and document versions; without a key, 401 where keys are configured and public documents only
where they are not; an acl change reaches every answer at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from streams.devtools.harness import Harness
from streams.web.http import build_http_app

ALICE, BOB, CAROL = "alice-key-5f0c1e2d9a", "bob-key-77b3e0c4a1d8", "carol-key-c4e1a9b27f30"
ADMIN_TOKEN = "admin-token-9d2e4b6a13"
KEYS = {"keys": [
    {"key": ALICE, "name": "alice", "principals": ["user:alice", "group:eng"], "roles": ["search", "read"]},
    {"key": BOB, "name": "bob", "principals": ["user:bob"], "roles": ["search", "read"]},
    {"key": CAROL, "name": "carol", "roles": ["search", "read"]},  # no principals: public documents only
]}
DOCS = [
    {"doc_id": "menu", "version": 1, "op": "upsert", "text": "the quarterly plan for the canteen menu"},
    {"doc_id": "roadmap", "version": 1, "op": "upsert", "text": "the quarterly plan for the engine roadmap",
     "acl": ["group:eng"]},
    {"doc_id": "salary", "version": 1, "op": "upsert", "text": "the quarterly plan for bob's salary",
     "acl": ["user:bob", "group:hr"]},
]
VISIBLE = {ALICE: {"menu", "roadmap"}, BOB: {"menu", "salary"}, CAROL: {"menu"}, ADMIN_TOKEN: {"menu"}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def serve(tmp_path: Path, scenario: Callable[[TestClient, Harness], Awaitable[Any]], keys: bool = True) -> Any:
    settings: dict[str, Any] = {"admin_token": ADMIN_TOKEN}
    if keys:
        (tmp_path / "keys.json").write_text(json.dumps(KEYS), encoding="utf-8")
        settings["api_keys_file"] = tmp_path / "keys.json"
    with Harness(tmp_path, **settings).register("ingest") as running:
        running.send("documents", DOCS)

        async def main() -> Any:
            async with TestClient(TestServer(build_http_app(running))) as client:
                return await scenario(client, running)
        return running.run(main())


async def found(client: TestClient, key: str | None, method: str = "GET", group: str = "chunk") -> set[str]:
    headers = bearer(key) if key else {}
    if method == "GET":
        response = await client.get(f"/search?q=quarterly+plan&k=10&group={group}", headers=headers)
    else:
        response = await client.post("/search", json={"q": "quarterly plan", "k": 10, "group": group},
                                     headers=headers)
    assert response.status == 200, await response.text()
    return {hit["doc_id"] for hit in (await response.json())["hits"]}


def test_each_key_finds_public_documents_and_those_its_principals_open(tmp_path: Path) -> None:
    async def scenario(client: TestClient, running: Harness) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for round_ in ("first", "cached"):  # the same query by every caller, twice: the cache keys on who asks
            for key in VISIBLE:
                for method in ("GET", "POST"):
                    for group in ("chunk", "doc"):
                        seen[(round_, key, method, group)] = await found(client, key, method, group)
        seen["anonymous"] = (await client.get("/search?q=quarterly+plan")).status
        return seen

    seen = serve(tmp_path, scenario)
    assert seen.pop("anonymous") == 401
    assert seen == {(round_, key, method, group): VISIBLE[key] for round_, key, method, group in seen}


def test_one_document_and_versions_are_shown_only_to_whom_may_read_them(tmp_path: Path) -> None:
    async def scenario(client: TestClient, running: Harness) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in (ALICE, BOB, CAROL):
            out[key] = {doc: (await client.get(f"/documents/{doc}", headers=bearer(key))).status
                        for doc in ("menu", "roadmap", "salary", "never")}
            response = await client.post("/documents/versions", json={"doc_ids": ["menu", "roadmap", "salary"]},
                                         headers=bearer(key))
            out[key, "versions"] = (await response.json())["versions"]
        await running.deliver("documents", [{"doc_id": "salary", "version": 2, "op": "delete"}])
        response = await client.post("/documents/versions", json={"doc_ids": ["salary"]}, headers=bearer(CAROL))
        out["deleted, asked by carol"] = await response.json()
        return out

    out = serve(tmp_path, scenario)
    for key, expected in VISIBLE.items():
        if key == ADMIN_TOKEN:
            continue
        assert out[key] == {doc: 200 if doc in expected else 404 for doc in ("menu", "roadmap", "salary", "never")}
        assert out[key, "versions"] == {doc: 1 if doc in expected else None for doc in ("menu", "roadmap", "salary")}
    assert out["deleted, asked by carol"] == {"versions": {"salary": None}, "deleted": []}  # not even that it was


def test_an_acl_change_reaches_every_answer_at_once(tmp_path: Path) -> None:
    async def scenario(client: TestClient, running: Harness) -> list[set[str]]:
        before = [await found(client, key) for key in (ALICE, CAROL)]  # now cached
        await running.deliver("documents", [{**DOCS[2], "version": 2, "acl": ["group:eng"]}])  # same text: no re-embed
        after = [await found(client, key) for key in (ALICE, BOB, CAROL)]
        await running.deliver("documents", [{**DOCS[1], "version": 2, "acl": None}])  # the roadmap is public now
        public = [await found(client, key) for key in (BOB, CAROL)]
        return before + after + public

    assert serve(tmp_path, scenario) == [{"menu", "roadmap"}, {"menu"},
                                         {"menu", "roadmap", "salary"}, {"menu"}, {"menu"},
                                         {"menu", "roadmap"}, {"menu", "roadmap"}]


def test_without_keys_every_caller_sees_public_documents_only(tmp_path: Path) -> None:
    async def scenario(client: TestClient, running: Harness) -> list[Any]:
        return [await found(client, None), await found(client, None, "POST", "doc"),
                (await client.get("/documents/roadmap")).status, (await client.get("/documents/menu")).status]

    assert serve(tmp_path, scenario, keys=False) == [{"menu"}, {"menu"}, 404, 200]


def test_the_dashboard_shows_every_callers_queries_but_only_the_hits_its_reader_may_read(tmp_path: Path) -> None:
    async def scenario(client: TestClient, running: Harness) -> dict[str, Any]:
        response = await client.post("/search", json={"q": "the engine roadmap", "k": 1}, headers=bearer(ALICE))
        assert (await response.json())["hits"][0]["doc_id"] == "roadmap"
        seen: dict[str, Any] = {}
        for key in (ALICE, CAROL, ADMIN_TOKEN):
            for _ in range(1000):  # the answer is logged just after it is sent (10 s at most)
                body = await (await client.get("/api/dashboard", headers=bearer(key))).json()
                if body["recent_queries"]:
                    break
                await asyncio.sleep(0.01)
            (query,) = body["recent_queries"]
            seen[key] = (query["text"], query["top_hit"], query["hits"])
        return seen

    assert serve(tmp_path, scenario) == {ALICE: ("the engine roadmap", "roadmap", 1),
                                         CAROL: ("the engine roadmap", None, 1),  # the log's query, not its document
                                         ADMIN_TOKEN: ("the engine roadmap", "roadmap", 1)}
