"""Poison at volume, through a real worker: 5,000 document, 2,000 query and 1,000 feedback records with every kind
of bad and poisonous record at random positions (first and last in the stream, and alone in a partition). Every
valid record is applied or answered as the rules say, every bad one is a dead letter with its reason (exactly
those: checked by partition and offset), no agent ever crashed, and consumer lag ends at 0."""

from __future__ import annotations

import json
import random
import re
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.broker import EmbeddedBroker
from streams.devtools.demo.bad_records import BadRecord, bad_documents, bad_feedback, bad_queries, poison_documents
from streams.devtools.worker_process import WorkerProcess
from streams.state.training_pairs import TrainingPairs
from tests.kafka_io import consume_all

pytestmark = pytest.mark.integration
NAMESPACE = "poison-it"
KEYED_PARTITIONS = 4  # partition 4 of every topic holds one poison record and nothing else
WORDS = ["heron", "otter", "kettle", "lantern", "harbour", "orchard", "quarry", "meadow", "glacier", "violin"]
Record = tuple[bytes | None, bytes | None, int]  # key, value, partition


def partition_of(key: bytes | None) -> int:
    return zlib.crc32(key or b"") % KEYED_PARTITIONS


def mixed(good: list[Record], bad: list[BadRecord], rng: random.Random) -> tuple[list[Record], list[Record]]:
    """`good` with `bad` at random places, one bad record first, one last and one alone in the extra partition."""
    records = list(good)
    placed = [(b.key, b.value, partition_of(b.key)) for b in bad]
    first, last, alone, rest = placed[0], placed[1], placed[2], placed[3:]
    for record in rest:
        records.insert(rng.randrange(len(records) + 1), record)
    return [first, *records, last, (alone[0], alone[1], KEYED_PARTITIONS)], [first, last, *rest,
                                                                              (alone[0], alone[1], KEYED_PARTITIONS)]


def produce(bootstrap: str, topic: str, records: list[Record]) -> dict[tuple[int, int], Record]:
    """Produce in order to explicit partitions; returns each record by (partition, offset) (fresh topics)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 4_000_000,
                         "queue.buffering.max.messages": 100_000})
    offsets: dict[int, int] = {}
    placed = {}
    for key, value, partition in records:
        producer.produce(topic, key=key, value=value, partition=partition)
        placed[(partition, offsets.get(partition, 0))] = (key, value, partition)
        offsets[partition] = offsets.get(partition, 0) + 1
        producer.poll(0)
    assert producer.flush(60) == 0
    return placed


def metrics_text(worker: WorkerProcess) -> str:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        return page.read().decode()


def metric(worker: WorkerProcess, pattern: str) -> float:
    return sum(float(v) for v in re.findall("^" + pattern + r" (\S+)$", metrics_text(worker), re.M))


def versions(worker: WorkerProcess, doc_ids: list[str]) -> dict[str, Any]:
    request = urllib.request.Request(f"{worker.url}/documents/versions", data=json.dumps({"doc_ids": doc_ids})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)  # type: ignore[no-any-return]


def documents(rng: random.Random) -> tuple[list[Record], dict[str, tuple[int, bool]]]:
    """4,800 valid document events (creates, then updates and deletes of some) and the final (version, deleted)."""
    events: list[Record] = []
    final: dict[str, tuple[int, bool]] = {}
    for i in range(4_400):
        doc_id = f"d{i}"
        text = f"Note {i}: the {rng.choice(WORDS)} by the {rng.choice(WORDS)}."
        events.append(_doc(doc_id, 1, text))
        final[doc_id] = (1, False)
    for i in rng.sample(range(4_400), 300):
        events.append(_doc(f"d{i}", 2, f"Note {i}, revised: the {rng.choice(WORDS)}."))
        final[f"d{i}"] = (2, False)
    for i in rng.sample(range(4_400), 100):
        events.append((f"d{i}".encode(), json.dumps({"doc_id": f"d{i}", "version": 3, "op": "delete"}).encode(),
                       partition_of(f"d{i}".encode())))
        final[f"d{i}"] = (3, True)
    return events, final


def _doc(doc_id: str, version: int, text: str) -> Record:
    value = json.dumps({"doc_id": doc_id, "version": version, "op": "upsert", "text": text}).encode()
    return doc_id.encode(), value, partition_of(doc_id.encode())


def test_poison_records_cost_only_themselves_at_volume(tmp_path: Path, registry_dir: Path,
                                                       broker: EmbeddedBroker) -> None:
    rng = random.Random(12)
    bootstrap = broker.bootstrap_servers
    worker = WorkerProcess(tmp_path / "data", registry_dir, bootstrap, NAMESPACE,
                           GRISTMILL_PARTITIONS=str(KEYED_PARTITIONS + 1), GRISTMILL_FEEDBACK_HOLD_S="3",
                           GRISTMILL_RETRAIN_EVERY_POSITIVE_PAIRS="1000000").start()
    try:
        # documents: 4,800 valid events, 37 bad kinds repeated to 200 bad records
        valid_docs, final = documents(rng)
        bad_doc_kinds = poison_documents("poison") + bad_documents("bad")
        bad = [bad_doc_kinds[i % len(bad_doc_kinds)] for i in range(200)]
        stream, bad_placed = mixed(valid_docs, bad, rng)
        placed = produce(bootstrap, f"{NAMESPACE}.documents", stream)
        bad_documents_at = {at for at, record in placed.items() if record in bad_placed}
        assert len(stream) == 5_000 and len(bad_documents_at) == 200

        doc_ids = sorted(final)
        worker.wait_for(lambda: versions(worker, doc_ids)["versions"] == {d: v for d, (v, _) in final.items()}, 600,
                        "every valid document at its final version")
        assert set(versions(worker, doc_ids)["deleted"]) == {d for d, (_, deleted) in final.items() if deleted}

        # queries: 1,950 valid, 50 bad
        valid_queries = [(f"q{i}".encode(), json.dumps({"query_id": f"q{i}", "text": f"the {rng.choice(WORDS)}",
                                                        "top_k": 3}).encode(), partition_of(f"q{i}".encode()))
                         for i in range(1_950)]
        query_kinds = bad_queries("bad-q")
        stream, bad_placed = mixed(valid_queries, [query_kinds[i % len(query_kinds)] for i in range(50)], rng)
        placed = produce(bootstrap, f"{NAMESPACE}.queries", stream)
        bad_queries_at = {at for at, record in placed.items() if record in bad_placed}
        responses = consume_all(bootstrap, f"{NAMESPACE}.responses", len(valid_queries), timeout_s=300)
        answered = {r["query_id"]: r for r in responses}
        assert set(answered) == {f"q{i}" for i in range(1_950)}
        assert all(r["model_version"] == r["index_version"] == "v1" for r in responses)

        # feedback: 950 judgements of served top hits, 48 bad records, 1 unknown document, 1 never-asked query
        judged = [q for q in answered if answered[q]["hits"]][:950]
        valid_feedback = [(q.encode(), json.dumps({"query_id": q, "doc_id": answered[q]["hits"][0]["doc_id"],
                                                   "label": 1}).encode(), partition_of(q.encode())) for q in judged]
        feedback_kinds = bad_feedback("bad-f")
        unknown_doc = BadRecord("unknown document", judged[0].encode(), json.dumps(
            {"query_id": judged[0], "doc_id": "no-such-doc", "label": 1}).encode(), "doc_id")
        never_asked = BadRecord("never asked", b"q-never", b'{"query_id": "q-never", "doc_id": "d1", "label": 1}',
                                "query_id")
        stream, bad_placed = mixed(valid_feedback, [unknown_doc, never_asked] + [feedback_kinds[i % 6]
                                                                                 for i in range(48)], rng)
        placed = produce(bootstrap, f"{NAMESPACE}.feedback", stream)
        bad_feedback_at = {at for at, record in placed.items() if record in bad_placed}
        pairs = TrainingPairs(worker.data_dir / "feedback.sqlite3")
        try:
            worker.wait_for(lambda: pairs.count("positive") == len({(k, v) for k, v, _ in valid_feedback}), 120,
                            "every valid judgement a training pair")
        finally:
            pairs.close()

        # exactly the bad records are dead letters, each with its reason
        expected = {("documents", *at) for at in bad_documents_at} | {("queries", *at) for at in bad_queries_at} | \
                   {("feedback", *at) for at in bad_feedback_at}
        letters = consume_all(bootstrap, f"{NAMESPACE}.deadletter", len(expected), timeout_s=120)
        got = {(letter["topic"].split(".")[-1], letter["partition"], letter["offset"]) for letter in letters}
        assert got == expected and len(letters) == len(expected)
        assert all(letter["errors"] and letter["errors"][0]["msg"] for letter in letters)
        truncated = [letter for letter in letters if letter.get("value_truncated")]
        assert len(truncated) >= 3 and all(letter["value_sha256"] and letter["value_size"] > 800_000
                                           for letter in truncated)  # kept a prefix of 1.9 MB, 1.2 MB, 800 KB values
        assert any(letter.get("key_truncated") for letter in letters)  # the 1.2 MB key

        # no agent ever crashed, the worker says ok, and everything was committed
        assert metric(worker, r'gristmill_agent_crashes_total\{agent="\w+"\}') == 0
        assert worker.get("/health")["status"] == "ok"
        worker.wait_for(lambda: metric(worker, r'gristmill_consumer_lag\{partition="\d+",topic="poison-it\.\w+"\}')
                        == 0, 60, "consumer lag 0")
    finally:
        worker.stop()
