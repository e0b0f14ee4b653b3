"""`/evaluation`, `/experiment` and the admin experiment endpoints over the in-process harness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from streams.devtools.harness import Harness, double_registry, message
from streams.web.http import build_http_app
from tests.polling import eventually

AUTH = {"Authorization": "Bearer s3cret"}
DOCS = [{"doc_id": f"d{i}", "version": 1, "op": "upsert", "text": f"note {i} about tea and bikes",
         "source": "notes"} for i in range(6)]


def test_experiments_are_started_once_answered_by_arm_and_reported(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    running = Harness(tmp_path, registry=registry, admin_token="s3cret").register(
        "ingest", "query", "feedback", "rollout", "experiment")
    running.send("documents", DOCS)

    async def scenario(client: TestClient) -> dict[str, Any]:
        refused = await client.post("/admin/experiment", json={"version": "v2", "mode": "split", "fraction": 1.0})
        unknown = await client.post("/admin/experiment", json={"version": "v7"}, headers=AUTH)
        bad = await client.post("/admin/experiment", json={"version": "v2", "fraction": 2}, headers=AUTH)
        serving = await client.post("/admin/experiment", json={"version": "v1"}, headers=AUTH)
        started = await client.post("/admin/experiment", json={"version": "v2", "mode": "split", "fraction": 1.0},
                                    headers=AUTH)
        statuses = [refused.status, unknown.status, bad.status, serving.status, started.status]
        await running.runners["model-updates"].run(  # as Kafka would deliver them to the rollout agent
            [message("model-updates", record, key, offset=i)
             for i, (key, record) in enumerate(running.outbox.records["model-updates"])])
        again = await client.post("/admin/experiment", json={"version": "v2"}, headers=AUTH)
        for tick in running.timers:  # build the challenger
            await tick()
        hit = await (await client.get("/search", params={"q": "tea", "k": "3", "user_id": "u1",
                                                         "segment": "web"})).json()
        bad_slice = await client.get("/search", params={"q": "tea", "segment": "x" * 65})
        async def read_evaluation() -> dict[str, Any]:  # the answer's row is recorded after it was sent
            return await (await client.get("/evaluation", params={"by": "version,arm,slice",
                                                                  "slices": "segment"})).json()

        evaluation = await eventually(read_evaluation, lambda body: body["rows"])
        bad_by = await client.get("/evaluation", params={"by": "colour"})
        experiment = await (await client.get("/experiment")).json()
        stopped = await client.post("/admin/experiment/stop", headers=AUTH)
        return {"statuses": [*statuses, again.status, bad_slice.status, bad_by.status, stopped.status],
                "hit": hit, "evaluation": evaluation, "experiment": experiment}

    async def main() -> dict[str, Any]:
        async with TestClient(TestServer(build_http_app(running))) as client:
            return await scenario(client)

    got = running.run(main())
    assert got["statuses"] == [401, 404, 400, 409, 202, 409, 400, 400, 202]
    assert (got["hit"]["arm"], got["hit"]["model_version"]) == ("candidate", "v2")
    assert got["hit"]["experiment"].startswith("v2-split-")
    rows = got["evaluation"]["rows"]
    assert [(r["version"], r["arm"], r["slice"], r["queries"]) for r in rows] == [
        ("v2", "candidate", "segment=web", 1)]
    assert got["evaluation"]["experiments"][0]["state"] == "running"
    latest = got["experiment"]["latest"]
    assert latest["experiment"]["mode"] == "split" and latest["arms"][0]["arm"] == "candidate"
    assert [u.status for u in running.published("model-updates")] == ["experiment", "stopped"]  # type: ignore
    running.close()
