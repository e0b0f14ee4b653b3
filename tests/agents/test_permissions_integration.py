"""Document permissions as deployed: two worker processes in one consumer group, API keys, documents with acls
produced to Kafka. No answer — over HTTP on either worker (each key's principals), or over Kafka (each query's
principals) — holds a document its caller may not read; every document a caller may read is found; a revocation
reaches the cached answers (each worker's index holds its partitions' documents)."""

from __future__ import annotations

import json
import time
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
AUDITOR = "auditor-key-58d0c2e7b1"  # reads everything: who holds which document
PRINCIPALS = {ALICE: ["user:alice", "group:eng"], BOB: ["user:bob"], NOBODY: [],
              AUDITOR: ["user:alice", "group:eng", "user:bob"]}
ACLS: list[list[str] | None] = [None, ["group:eng"], ["user:bob"], ["user:bob", "group:eng"]]
DOCS: dict[str, list[str] | None] = {f"plan-{n}": ACLS[n % len(ACLS)] for n in range(12)}


def readable(principals: list[str] | None, docs: dict[str, list[str] | None]) -> set[str]:
    return {doc for doc, acl in docs.items() if acl is None or set(acl) & set(principals or [])}


def produce_documents(broker: EmbeddedBroker, docs: dict[str, list[str] | None], version: int = 1) -> None:
    produce(broker.bootstrap_servers, f"{NAMESPACE}.documents", [(doc.encode(), json.dumps(
        {"doc_id": doc, "version": version, "op": "upsert", "text": f"the quarterly plan, part {doc}", "acl": acl}
    ).encode()) for doc, acl in docs.items()])


def holders(workers: list[WorkerProcess], docs: dict[str, list[str] | None]) -> dict[str, list[int]]:
    """doc -> the workers whose index holds it."""
    return {doc: [i for i, w in enumerate(workers) if call(w, f"/documents/{doc}", AUDITOR)[0] == 200]
            for doc in docs}


def call(worker: WorkerProcess, path: str, key: str | None, **params: Any) -> tuple[int, Any]:
    request = urllib.request.Request(f"{worker.url}{path}?{urllib.parse.urlencode(params)}",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def found(worker: WorkerProcess, key: str) -> tuple[set[str], bool]:
    status, body = call(worker, "/search", key, q="the quarterly plan", k=1000, group="doc")
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
        docs: dict[str, list[str] | None] = {}
        deadline = time.monotonic() + 120
        while {i for held in holders(workers, docs).values() for i in held} != {0, 1}:  # the group has settled
            assert time.monotonic() < deadline, f"documents were indexed by one worker only: {holders(workers, docs)}"
            wave = {f"warm-up-{len(docs) + i}": None for i in range(8)}
            docs.update(wave)
            produce_documents(broker, wave)
            time.sleep(2)
        docs.update(DOCS)
        produce_documents(broker, DOCS)
        workers[0].wait_for(lambda: all(held for held in holders(workers, docs).values()), 90,
                            "every document indexed by one worker or the other")
        assert all(len(held) == 1 for held in holders(workers, DOCS).values())  # each index its own partitions

        assert {call(w, "/search", None, q="plan")[0] for w in workers} == {401}  # keys configured: no key, no answer
        for key, principals in PRINCIPALS.items():
            answers = [found(w, key)[0] for w in workers]
            assert all(answer <= readable(principals, docs) for answer in answers), (key, answers)
            assert set().union(*answers) == readable(principals, docs)  # and everything it may read is found

        settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, namespace=NAMESPACE)
        asked: dict[str, list[str] | None] = {}
        with QueryRoundTrip(settings) as roundtrip:
            for principals in (None, *PRINCIPALS.values()):
                for mode in ("dense", "sparse", "hybrid"):
                    for n in range(3):  # several query ids: partitions of both workers
                        asked[roundtrip.send(f"the quarterly plan {n}", 1000, mode=mode, principals=principals,
                                             query_id=f"q-{mode}-{n}-{len(asked)}")] = principals
            answers = roundtrip.wait(asked, 90)
        shown = {query_id: {hit["doc_id"] for hit in answers[query_id].response["hits"]} for query_id in asked}
        assert all(shown[query_id] <= readable(principals, docs) for query_id, principals in asked.items()), shown
        assert set().union(*shown.values()) - readable(None, docs), "no restricted document answered over Kafka"

        # A revocation: plan-3 is bob's and eng's; eng loses it (same text: re-stamped, not re-embedded)
        owner = workers[holders(workers, {"plan-3": None})["plan-3"][0]]
        assert "plan-3" in found(owner, ALICE)[0] and found(owner, ALICE)[1] is True  # in the cached answer
        produce(broker.bootstrap_servers, f"{NAMESPACE}.documents", [(b"plan-3", json.dumps(
            {"doc_id": "plan-3", "version": 2, "op": "upsert", "text": "the quarterly plan, part plan-3",
             "acl": ["user:bob"]}).encode())])
        owner.wait_for(lambda: "plan-3" not in found(owner, ALICE)[0], 30, "the revocation in alice's answers")
        assert call(owner, "/documents/plan-3", BOB)[1]["version"] == 2 and found(owner, ALICE)[1] is True  # cached
        assert all("plan-3" not in found(w, ALICE)[0] for w in workers)
        assert call(owner, "/documents/plan-3", ALICE)[0] == 404
        assert "plan-3" in found(owner, BOB)[0]
    finally:
        for worker in workers:
            worker.stop()
