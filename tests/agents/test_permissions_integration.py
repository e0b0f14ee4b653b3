"""Document permissions as deployed: two worker processes in one consumer group, API keys, documents with acls
produced to Kafka. No answer — over HTTP on either worker (each key's principals), or over Kafka (each query's
principals) — holds a document its caller may not read; every document a caller may read is found; a revocation
reaches the cached answers at once."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from tests.kafka_io import produce

pytestmark = pytest.mark.integration

NAMESPACE = "permissions-it"
ALICE, BOB, NOBODY = "alice-key-6c1d0e9f2a", "bob-key-0f4e2b7c9d11", "nobody-key-93ab17c5e2"
PRINCIPALS = {ALICE: ["user:alice", "group:eng"], BOB: ["user:bob"], NOBODY: []}
ACLS: list[list[str] | None] = [None, ["group:eng"], ["user:bob"], ["user:bob", "group:eng"]]
DOCS = {f"plan-{n}": ACLS[n % len(ACLS)] for n in range(12)}


def readable(principals: list[str] | None) -> set[str]:
    return {doc for doc, acl in DOCS.items() if acl is None or set(acl) & set(principals or [])}


def call(worker: WorkerProcess, path: str, key: str | None, **params: Any) -> tuple[int, Any]:
    request = urllib.request.Request(f"{worker.url}{path}?{urllib.parse.urlencode(params)}",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def found(worker: WorkerProcess, key: str) -> tuple[set[str], bool]:
    status, body = call(worker, "/search", key, q="the quarterly plan", k=50, group="doc")
    assert status == 200, status
    return {hit["doc_id"] for hit in body["hits"]}, body["cached"]


def test_no_answer_over_kafka_or_http_holds_a_document_its_caller_may_not_read(
        tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"key": key, "name": key.split("-")[0], "principals": principals,
                                          "roles": ["search", "read"]} for key, principals in PRINCIPALS.items()]}))
    env = {"GRISTMILL_API_KEYS_FILE": str(keys), "GRISTMILL_QUERY_CACHE_TTL_S": "600", "GRISTMILL_PARTITIONS": "4"}
    workers = [WorkerProcess(tmp_path / name, registry_dir, broker.bootstrap_servers, NAMESPACE, **env).start()
               for name in ("a", "b")]
    try:
        produce(broker.bootstrap_servers, f"{NAMESPACE}.documents", [(doc.encode(), json.dumps(
            {"doc_id": doc, "version": 1, "op": "upsert", "text": f"the quarterly plan, part {doc}", "acl": acl}
        ).encode()) for doc, acl in DOCS.items()])
        workers[0].wait_for(lambda: sum(call(w, "/health", NOBODY)[1]["index"]["documents"] for w in workers)
                            == len(DOCS), 90, "every document indexed by one worker or the other")

        assert {call(w, "/search", None, q="plan")[0] for w in workers} == {401}  # keys configured: no key, no answer
        for key, principals in PRINCIPALS.items():
            answers = [found(w, key)[0] for w in workers]
            assert all(answer <= readable(principals) for answer in answers), (key, answers)
            assert set().union(*answers) == readable(principals)  # and everything it may read is found

        settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, namespace=NAMESPACE)
        asked: dict[str, list[str] | None] = {}
        with QueryRoundTrip(settings) as roundtrip:
            for principals in (None, *PRINCIPALS.values(), ["group:eng", "user:bob"]):
                for mode in ("dense", "sparse", "hybrid"):
                    for n in range(3):  # several query ids: partitions of both workers
                        asked[roundtrip.send(f"the quarterly plan {n}", 50, mode=mode, principals=principals,
                                             query_id=f"q-{mode}-{n}-{len(asked)}")] = principals
            answers = roundtrip.wait(asked, 90)
        shown = {query_id: {hit["doc_id"] for hit in answers[query_id].response["hits"]} for query_id in asked}
        assert all(shown[query_id] <= readable(principals) for query_id, principals in asked.items()), shown
        assert set().union(*shown.values()) - readable(None), "no restricted document answered over Kafka at all"

        # A revocation: plan-3 is bob's and eng's; eng loses it (same text: re-stamped, not re-embedded)
        owner = next(w for w in workers if call(w, "/documents/plan-3", BOB)[0] == 200)
        assert "plan-3" in found(owner, ALICE)[0] and found(owner, ALICE)[1] is True  # in the cached answer
        produce(broker.bootstrap_servers, f"{NAMESPACE}.documents", [(b"plan-3", json.dumps(
            {"doc_id": "plan-3", "version": 2, "op": "upsert", "text": "the quarterly plan, part plan-3",
             "acl": ["user:bob"]}).encode())])
        owner.wait_for(lambda: call(owner, "/documents/plan-3", BOB)[1]["version"] == 2, 30, "the revocation applied")
        assert all("plan-3" not in found(w, ALICE)[0] for w in workers)  # at once, cached or not
        assert call(owner, "/documents/plan-3", ALICE)[0] == 404
        assert "plan-3" in found(owner, BOB)[0]
    finally:
        for worker in workers:
            worker.stop()
