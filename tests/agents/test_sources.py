"""Source topics through the ingest agent, in process (harness: hashing encoder, in-memory store, no broker)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import DeadLetter, QualityReport
from streams.devtools.harness import Harness
from streams.sources.mapping import InvalidSources
from streams.validation import RawMessage
from streams.web.dashboard import dashboard_state
from tests.streams.sources.debezium_events import articles_sources, encode, enveloped, pg_event, row

TOPIC = "dbserver1.public.articles"
SOURCES = articles_sources(TOPIC)


class Topic:
    """Records of the source topic with growing offsets."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, value: Any, key: Any = None, raw: bytes | None = None) -> RawMessage:
        self.offset += 1
        return RawMessage(TOPIC, 0, self.offset, encode(key), raw if raw is not None else encode(value), 1.0)


@pytest.fixture
def sources_file(tmp_path: Path) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES)
    return path


def test_debezium_changes_keep_the_index_as_the_table(tmp_path: Path, sources_file: Path) -> None:
    topic = Topic()
    with Harness(tmp_path, sources_file=sources_file).register("ingest") as harness:
        store = harness.shared.serving.current.store
        created = [topic(enveloped(pg_event("r", 100, after=row(i, f"Title {i}", f"Body of article {i}.")),
                                   {"type": "struct"}), {"id": i}) for i in (1, 2, 3)]
        harness.send("source:articles", created)
        harness.send("source:articles", [
            topic(pg_event("u", 110, after=row(1, "Title 1", "Edited body."))),
            topic(pg_event("d", 120, before={"id": 2}), {"id": 2}),
            topic(None, {"id": 2}),  # its tombstone
            topic(pg_event("u", 130, after=row(3, "Title 3", "Unpublished.", status="draft"))),
        ])
        ledger = store.get_documents(["article-1", "article-2", "article-3"])
        assert {d: (s.version, s.deleted) for d, s in ledger.items()} == {
            "article-1": (110, False), "article-2": (120, True), "article-3": (130, True)}
        assert [c.text for c in store.chunks("article-1")] == ["Title 1\n\nEdited body."]
        assert harness.published("deadletter") == []
        harness.send("source:articles", [created[0]])  # re-delivered (its offset was processed): stale, no noise
        assert harness.published("deadletter") == []
        assert store.get_documents(["article-1"])["article-1"].version == 110
        harness.send("source:articles", [topic(pg_event("u", 100, after=row(1, "Title 1", "Older.")))])  # a new
        (letter,) = harness.published("deadletter")  # record, older than the index: the versions did not grow
        assert isinstance(letter, DeadLetter) and letter.topic == TOPIC and letter.errors[0].loc == "version"
        assert letter.errors[0].msg.startswith("source articles: version 100 does not grow")
        assert "article-1" not in letter.errors[0].msg  # reasons are shown to read keys: no document named
        again = topic(pg_event("u", 110, after=row(1, "Title 1", "Edited body.")))
        harness.send("source:articles", [again])  # the same version again: nothing happens, nothing is wrong
        assert len(harness.published("deadletter")) == 1
        assert [c.text for c in store.chunks("article-1")] == ["Title 1\n\nEdited body."]
        counts = harness.shared.sources[0].counts.as_dict()
        assert counts == {"records": 10, "mapped": 8, "skipped": 1, "deadlettered": 1}
        changed = topic(pg_event("u", 110, after=row(1, "Title 1", "Other text, same version.")))
        harness.send("source:articles", [changed])  # the same version saying something else
        assert "that version with other content" in harness.published("deadletter")[-1].errors[0].msg
        assert [c.text for c in store.chunks("article-1")] == ["Title 1\n\nEdited body."]


def test_bad_records_cost_only_themselves(tmp_path: Path, sources_file: Path) -> None:
    topic = Topic()
    with Harness(tmp_path, sources_file=sources_file).register("ingest") as harness:
        harness.send("source:articles", [
            topic(pg_event("c", 10, after=row(1, "One", "Before the bad ones."))),
            topic(None, raw=b"\x00not json"),
            topic(pg_event("c", 11, after={"id": 9, "title": "no body", "status": "published"})),
            topic(pg_event("t", 12)),
            topic(pg_event("c", 13, after=row(2, "Two", "After the bad ones."))),
        ])
        letters = harness.published("deadletter")
        assert [(d.offset, d.errors[0].loc) for d in letters] == [(2, "value"), (3, "row.author"), (4, "value.op")]
        assert all("source articles" in d.errors[0].msg for d in letters)
        ledger = harness.shared.serving.current.store.get_documents(["article-1", "article-2", "article-9"])
        assert set(ledger) == {"article-1", "article-2"} and ledger["article-1"].source == "articles"


def test_a_worker_does_not_start_with_a_mapping_that_cannot_work(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SOURCES.replace('"article-{id}"', '"article"'))
    with pytest.raises(InvalidSources, match="doc_id must name at least one field"):
        Harness(tmp_path, sources_file=bad)


AVRO_SOURCES = """
sources:
  - name: products
    topic: shop.products
    format: avro
    doc_id: "product-{id}"
    title: "{name}"
    text: "{description}"
    version: kafka.offset
"""
PRODUCT = json.dumps({"type": "record", "name": "Product", "fields": [
    {"name": "id", "type": "long"}, {"name": "name", "type": "string"}, {"name": "description", "type": "string"}]})


def test_a_registry_framed_topic_through_the_agent(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(AVRO_SOURCES)
    with Harness(tmp_path, sources_file=path, schema_registry_url="mock://agents").register("ingest") as harness:
        (source,) = harness.shared.sources
        assert source.mapper is not None and source.mapper.registry is not None
        serializer = AvroSerializer(source.mapper.registry.client, PRODUCT)  # the worker's registry

        def product(offset: int, value: bytes | None, key: bytes) -> RawMessage:
            return RawMessage("shop.products", 0, offset, key, value, 1.0)

        def framed(n: int, description: str) -> bytes:
            return serializer({"id": n, "name": f"Product {n}", "description": description},
                              SerializationContext("shop.products", MessageField.VALUE))

        harness.send("source:products", [
            product(1, framed(1, "A kettle that boils water."), b"1"),
            product(2, b"\x00\x00\x00\x30\x39\x02", b"2"),  # schema id 12345: unknown to the registry
            product(3, framed(3, "A lamp for the desk."), b"3"),
            product(4, None, b'{"id": 1}'),  # a tombstone deletes the row its key names (versioned by offset)
        ])
        (letter,) = harness.published("deadletter")
        assert letter.offset == 2 and "schema id 12345 is unknown" in letter.errors[0].msg
        ledger = harness.shared.serving.current.store.get_documents(["product-1", "product-2", "product-3"])
        assert {d: (s.version, s.deleted) for d, s in ledger.items()} == {"product-1": (4, True),
                                                                          "product-3": (3, False)}


def test_versions_must_grow_within_a_batch_and_a_source_changes_only_its_own(tmp_path: Path,
                                                                             sources_file: Path) -> None:
    topic = Topic()
    with Harness(tmp_path, sources_file=sources_file).register("ingest") as harness:
        harness.send("documents", [{"doc_id": "article-5", "version": 1, "op": "upsert", "text": "Written directly.",
                                    "acl": ["group:hr"]}])
        harness.send("source:articles", [
            topic(pg_event("u", 300, after=row(4, "Four", "Newer first."))),
            topic(pg_event("u", 200, after=row(4, "Four", "Older after it."))),  # in the same batch
            topic(pg_event("u", 300, after=row(4, "Four", "Newer first."))),  # the same again: a re-delivery
            topic(pg_event("u", 900, after=row(5, "Five", "Not this source's document."))),
            topic(pg_event("u", 901, after=row(5, "Five", "A draft now.", status="draft"))),
        ])
        letters = harness.published("deadletter")
        assert [(d.offset, d.errors[0].msg.split(": ", 1)[1][:40]) for d in letters] == [
            (2, "version 200 does not grow: the index hol"), (4, "the document was written by another writ"),
            (5, "the document was written by another writ")]
        ledger = harness.shared.serving.current.store.get_documents(["article-4", "article-5"])
        assert ledger["article-4"].version == 300 and harness.shared.serving.current.store.chunks("article-4")[
            0].text == "Four\n\nNewer first."
        assert (ledger["article-5"].version, ledger["article-5"].acl) == (1, ["group:hr"])  # untouched
        assert harness.shared.sources[0].counts.as_dict() == {"records": 5, "mapped": 2, "skipped": 0,
                                                              "deadlettered": 3}


def test_a_source_is_checked_by_its_own_suite_and_the_dashboard_names_what_failed(tmp_path: Path,
                                                                                  sources_file: Path) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "articles.json").write_text(json.dumps({"name": "source:articles", "expectations": [
        {"type": "expect_column_max_to_be_between", "kwargs": {"column": "text_length", "max_value": 10}}]}))
    topic = Topic()
    with Harness(tmp_path, sources_file=sources_file, quality_suites_dir=suites, monitor_window_records=20,
                 ).register("ingest", "monitor") as harness:
        harness.send("source:articles", [topic(pg_event("c", 10 + i, after=row(i, f"T{i}", f"A body of text {i}.")))
                                         for i in range(20)])
        deadline = time.monotonic() + 30
        while not harness.published("quality"):
            assert time.monotonic() < deadline, "no quality report for the source's window"
            harness.run(asyncio.sleep(0.1))
        (report,) = harness.published("quality")
        assert isinstance(report, QualityReport) and report.suite == "source:articles" and not report.success
        alerts = [a for a in dashboard_state(harness.shared, trains=False)["alerts"] if a["topic"] == "source:articles"]
        assert alerts == [{"topic": "source:articles", "kind": "quality", "failed": [{
            "expectation": "expect_column_max_to_be_between", "column": "text_length", "suite": "source:articles",
            "observed": len("A body of text 10.")}]}]
        assert len(harness.shared.serving.current.store.get_documents([f"article-{i}" for i in range(20)])) == 20


def test_a_truncate_deletes_the_sources_older_documents_when_configured(tmp_path: Path, sources_file: Path) -> None:
    sources_file.write_text(SOURCES + "    on_truncate: delete-all\n")
    topic = Topic()
    with Harness(tmp_path, sources_file=sources_file).register("ingest") as harness:
        harness.send("documents", [{"doc_id": "elsewhere", "version": 1, "op": "upsert", "text": "Not the source's."}])
        harness.send("source:articles", [topic(pg_event("c", 10 + i, after=row(i, f"T{i}", f"Body {i}.")))
                                         for i in range(3)])
        harness.send("source:articles", [
            topic(pg_event("c", 20, after=row(7, "T7", "Before the truncate."))),
            topic(pg_event("t", 30)),
            topic(pg_event("c", 40, after=row(8, "T8", "After the truncate."))),
        ])
        store = harness.shared.serving.current.store
        ledger = store.get_documents(["article-0", "article-1", "article-2", "article-7", "article-8", "elsewhere"])
        assert {d: (s.version, s.deleted) for d, s in ledger.items()} == {
            "article-0": (30, True), "article-1": (30, True), "article-2": (30, True), "article-7": (30, True),
            "article-8": (40, False), "elsewhere": (1, False)}
        assert harness.published("deadletter") == []
        harness.send("source:articles", [
            topic(pg_event("c", 25, after=row(9, "T9", "From a partition that lags behind the truncate."))),
            topic(pg_event("c", 50, after=row(1, "T1", "Reloaded after the truncate."))),  # the same id again
            topic(pg_event("u", 60, after=row(2, "T2", "A draft.", status="draft"))),
            topic(pg_event("u", 70, after=row(2, "T2", "Published again."))),  # back into the filter
        ])
        (lagging,) = harness.published("deadletter")
        assert lagging.offset == 7 and "older than the source's truncate at version 30" in lagging.errors[0].msg
        ledger = store.get_documents(["article-1", "article-2", "article-9"])
        assert {d: (s.version, s.deleted) for d, s in ledger.items()} == {"article-1": (50, False),
                                                                           "article-2": (70, False)}


def test_a_documents_event_may_not_write_in_a_sources_name(tmp_path: Path, sources_file: Path) -> None:
    with Harness(tmp_path, sources_file=sources_file).register("ingest") as harness:
        harness.send("documents", [{"doc_id": "mine", "version": 1, "op": "upsert", "text": "Tagged as a source.",
                                    "source": "articles"},
                                   {"doc_id": "fine", "version": 1, "op": "upsert", "text": "Its own source.",
                                    "source": "wiki"}])
        (letter,) = harness.published("deadletter")
        assert letter.errors[0].loc == "source" and "configured source's name" in letter.errors[0].msg
        assert set(harness.shared.serving.current.store.get_documents(["mine", "fine"])) == {"fine"}
