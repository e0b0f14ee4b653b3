"""Sources as deployed: two worker processes in one consumer group read a Debezium topic (4 partitions, keyed by
the row's primary key, the JSON converter with and without schemas) through the real broker; creates, updates,
deletes with their tombstones, a row leaving the filter and bad records end as the table says, on whichever worker
holds the row's partition; bad records become dead letters naming the source; `/health` counts per source.
(Each worker here has its own embedded index; deployed, the workers share a Qdrant server.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from tests.kafka_io import consume_all, produce
from tests.streams.sources.debezium_events import (
    KEY_SCHEMA,
    VALUE_SCHEMA,
    articles_sources,
    encode,
    enveloped,
    pg_event,
    row,
)

pytestmark = pytest.mark.integration

NAMESPACE = "sources-it"
TOPIC = "sources-it-db.public.articles"
SOURCES = articles_sources(TOPIC)


def change(article_id: int, event: dict[str, Any] | None) -> tuple[bytes | None, bytes | None]:
    """A keyed record; even ids with the schema envelope, odd ones without (both converters on one topic)."""
    schemas = article_id % 2 == 0
    key = enveloped({"id": article_id}, KEY_SCHEMA) if schemas else {"id": article_id}
    value = enveloped(event, VALUE_SCHEMA) if schemas and event is not None else event
    return encode(key), encode(value)


def held(workers: list[WorkerProcess], doc_id: str) -> list[dict[str, Any]]:
    """The ledger entries the workers hold for a document, deletes included."""
    return [state for w in workers if (state := w.get(f"/documents/{doc_id}")) is not None]


def live(workers: list[WorkerProcess], doc_id: str) -> list[dict[str, Any]]:
    return [state for state in held(workers, doc_id) if not state["deleted"]]


def key_id(letter: dict[str, Any]) -> int:
    key = json.loads(letter["key"])
    return int(key.get("payload", key)["id"])


def test_a_debezium_topic_read_by_two_workers_keeps_the_index_as_the_table(
        tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(TOPIC, 4, 1)])[TOPIC].result(30)
    sources = tmp_path / "sources.yaml"
    sources.write_text(SOURCES)
    workers = [WorkerProcess(tmp_path / name, registry_dir, broker.bootstrap_servers, NAMESPACE,
                             GRISTMILL_SOURCES_FILE=str(sources), GRISTMILL_PARTITIONS="4").start()
               for name in ("a", "b")]
    try:
        lsn, ids = 1000, []
        deadline = time.monotonic() + 120
        while not all(any(held([w], f"article-{i}") for i in ids) for w in workers):  # the group has settled
            assert time.monotonic() < deadline, "one worker never indexed a row of the source"
            wave = list(range(len(ids) + 1, len(ids) + 9))
            produce(broker.bootstrap_servers, TOPIC, [change(i, pg_event("r", lsn + i, after=row(
                i, f"Article {i}", f"The body of article {i}."))) for i in wave])
            ids += wave
            time.sleep(2)
        workers[0].wait_for(lambda: all(held(workers, f"article-{i}") for i in ids), 60, "every row indexed")

        lsn = 5000
        produce(broker.bootstrap_servers, TOPIC, [
            change(1, pg_event("u", lsn + 1, after=row(1, "Article 1", "Edited."))),
            change(2, pg_event("d", lsn + 2, before={"id": 2})), change(2, None),  # a delete and its tombstone
            change(3, pg_event("u", lsn + 3, after=row(3, "Article 3", "Now a draft.", status="draft"))),
            (encode({"id": 4}), b"{broken json"),
            change(5, pg_event("u", lsn + 5, after={"id": 5, "title": "no body", "status": "published",
                                                    "author": "x", "year": 1})),
            change(6, pg_event("u", 1, after=row(6, "Article 6", "An older version."))),  # does not grow
            change(7, pg_event("u", lsn + 7, after=row(7, "Article 7", "After the bad ones."))),
        ])
        def newest() -> list[tuple[int, bool] | None]:
            """Each row's newest state on either worker (a rebalance under load may move a partition: its rows
            then live on as old versions where they were first indexed, and the newest is the table's)."""
            return [max(((s["version"], s["deleted"]) for s in held(workers, f"article-{i}")), default=None)
                    for i in (1, 2, 3, 6, 7)]

        expected = [(lsn + 1, False), (lsn + 2, True), (lsn + 3, True), (1006, False), (lsn + 7, False)]
        workers[0].wait_for(lambda: newest() == expected, 60, f"updates and deletes applied: {expected}")
        one = max(live(workers, "article-1"), key=lambda s: s["version"])
        assert one["source"] == "articles" and one["metadata"] == {"author": "ann", "year": 2024}
        assert one["chunks"][0]["text"] == "Article 1\n\nEdited."
        letters = consume_all(broker.bootstrap_servers, f"{NAMESPACE}.deadletter", 3, timeout_s=20)
        reasons = {key_id(letter): letter["errors"][0] for letter in letters}
        assert {4, 5} <= set(reasons) <= {4, 5, 6} and all(letter["topic"] == TOPIC for letter in letters)
        assert reasons[4]["loc"] == "value" and "source articles" in reasons[4]["msg"]
        assert reasons[5]["loc"] == "row.body" and "no field 'body'" in reasons[5]["msg"]
        if 6 in reasons:  # unless its partition moved to the worker that never saw article-6
            assert reasons[6]["loc"] == "version" and "does not grow" in reasons[6]["msg"]

        def counted() -> dict[str, int]:
            totals: dict[str, int] = {}
            for w in workers:
                for name, value in w.get("/health")["sources"]["articles"].items():
                    if name != "topic":
                        totals[name] = totals.get(name, 0) + value
            return totals

        total = len(ids) + 8  # at least once: a rebalance may hand a record to the other worker again
        counts = workers[0].wait_for(lambda: (c := counted())["records"] >= total and c, 30,
                                     f"every record counted: {total}, {counted()}")
        assert counts["skipped"] >= 1 and counts["deadlettered"] >= len(reasons)
        assert counts["records"] - counts["skipped"] - 2 <= counts["mapped"] <= counts["records"] - counts["skipped"]
    finally:
        for worker in workers:
            worker.stop()


def test_sources_check_reads_records_from_a_topic(tmp_path: Path, broker: EmbeddedBroker) -> None:
    copy = "sources-it-check.articles"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(copy, 1, 1)])[copy].result(30)
    produce(broker.bootstrap_servers, copy, [change(1, pg_event("c", 7, after=row(1, "One", "The first."))),
                                             change(2, pg_event("c", 8, after={"id": 2, "status": "published"}))])
    sources = tmp_path / "sources.yaml"
    sources.write_text(SOURCES)
    out = subprocess.run([sys.executable, "-m", "streams", "sources", "check", str(sources), "--from", copy],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "COLUMNS": "200"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert "0@0: upsert 'article-1' version 7 title 'One' text 'The first.'" in out.stdout
    assert "0@1: dead letter: row.author: source articles: metadata.author: the row has no field 'author'" in out.stdout
    assert "2 record(s): 1 mapped, 0 skipped, 1 dead letter(s)" in out.stdout
