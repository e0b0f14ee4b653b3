"""Ingest through the real worker on the embedded Tansu broker and a qdrant-edge shard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from streams.broker import EmbeddedBroker
from streams.devtools.demo.bad_records import bad_documents
from streams.devtools.worker_process import WorkerProcess
from streams.ml.chunking import Chunker
from streams.state.edge_store import EdgeVectorStore
from streams.state.registry import ModelVersion
from tests.kafka_io import consume_all, produce

pytestmark = pytest.mark.integration

NAMESPACE = "ingest-it"
CHUNK_TOKENS, OVERLAP = 32, 8
LONG = " ".join(f"Section {i} says offsets are committed only after the index write." for i in range(12))

Event = tuple[bytes | None, bytes | None]


def doc(doc_id: str, version: int, text: str | None = None, op: str = "upsert") -> Event:
    value: dict[str, object] = {"doc_id": doc_id, "version": version, "op": op}
    if text is not None:
        value["text"] = text
    return doc_id.encode(), json.dumps(value).encode()


def good_stream() -> tuple[list[Event], dict[str, tuple[int, str | None]]]:
    """Events and the expected final (version, text or None when deleted) of every document."""
    events = [
        doc("shrink", 1, LONG), doc("shrink", 2, "Short now."),
        doc("grow", 1, "Tiny."), doc("grow", 2, LONG),
        doc("deleted", 1, LONG), doc("deleted", 2, op="delete"),
        doc("out-of-order", 3, "Three wins."), doc("out-of-order", 2, "Two is late."),
        doc("dupe", 1, "Said twice."), doc("dupe", 1, "Said twice."),
        doc("same-content", 1, "Unchanged body."), doc("same-content", 2, "Unchanged body."),
        doc("delete-first", 5, op="delete"), doc("delete-first", 4, "Older upsert after delete."),
        doc("never-indexed", 1, op="delete"),
    ]
    expected: dict[str, tuple[int, str | None]] = {
        "shrink": (2, "Short now."), "grow": (2, LONG), "deleted": (2, None), "out-of-order": (3, "Three wins."),
        "dupe": (1, "Said twice."), "same-content": (2, "Unchanged body."), "delete-first": (5, None),
        "never-indexed": (1, None),
    }
    for i in range(40):
        events.append(doc(f"doc-{i}", 1, f"Document number {i} is about topic {i % 7}. " * (1 + i % 5)))
        expected[f"doc-{i}"] = (1, f"Document number {i} is about topic {i % 7}. " * (1 + i % 5))
    return events, expected


def interleave(good: list[Event], bad: list[Event]) -> list[Event]:
    mixed: list[Event] = []
    for i, event in enumerate(good):
        mixed.append(event)
        if i < len(bad):
            mixed.append(bad[i])
    return mixed + bad[len(good):]


def expected_chunks(expected: dict[str, tuple[int, str | None]], tokenizer: Tokenizer,
                    model: ModelVersion) -> set[tuple[str, int, int, str]]:
    chunker = Chunker(tokenizer, CHUNK_TOKENS, OVERLAP, model.max_tokens)
    return {(doc_id, chunk.number, version, chunk.text)
            for doc_id, (version, text) in expected.items() if text is not None
            for chunk in chunker.split(text)}


def documents_applied(worker: WorkerProcess) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(r'^gristmill_documents_total\{outcome="\w+"\} (\S+)$', text, re.M))


@pytest.fixture
def worker(tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> Iterator[WorkerProcess]:
    process = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, NAMESPACE,
                            GRISTMILL_CHUNK_TOKENS=str(CHUNK_TOKENS), GRISTMILL_CHUNK_OVERLAP=str(OVERLAP),
                            GRISTMILL_INGEST_BATCH_RECORDS="16",
                            GRISTMILL_STORE_COMPACT_INTERVAL_S="1")  # compaction runs between batches
    yield process
    process.stop()


def test_stream_with_updates_deletes_duplicates_and_bad_records(worker: WorkerProcess, broker: EmbeddedBroker,
                                                                encoder, base_model) -> None:  # type: ignore[no-untyped-def]
    good, expected = good_stream()
    bad_kinds = bad_documents("bad")
    bad = [(b.key, b.value) for b in bad_kinds]
    stream = interleave(good, bad)
    topic = f"{NAMESPACE}.documents"
    worker.start()
    produce(broker.bootstrap_servers, topic, stream)

    # every bad record is dead-lettered, as received, with a reason naming the field
    letters = consume_all(broker.bootstrap_servers, f"{NAMESPACE}.deadletter", len(bad), timeout_s=90)
    assert len(letters) == len(bad)
    by_value = {(letter["value"], letter["key"]): letter for letter in letters}
    for kind in bad_kinds:
        if kind.value is None or kind.value.startswith(b'{"doc_id": "bad\xff'):
            continue  # null and non-UTF-8 values are checked below
        letter = by_value[(kind.value.decode(), kind.key.decode() if kind.key is not None else None)]
        assert letter["topic"] == topic and letter["offset"] >= 0
        assert letter["errors"][0]["loc"].startswith(kind.loc), kind.kind
    assert sum(1 for letter in letters if letter["value_encoding"] == "base64") == 1
    assert sum(1 for letter in letters if letter["value"] is None) == 1

    # the worker kept going: every valid record around the bad ones is applied
    worker.wait_for(lambda: documents_applied(worker) >= len(good), 120, "all valid documents applied")
    for doc_id, (version, text) in expected.items():
        state = worker.get(f"/documents/{doc_id}")
        assert state is not None and state["version"] == version and state["deleted"] == (text is None), doc_id
    hits = worker.get("/search", q="Which section says offsets are committed?", k=3)["hits"]
    assert hits[0]["doc_id"] == "grow" and hits[0]["text"]

    # the whole index is exactly the expected chunks: nothing lost, nothing extra
    assert worker.stop() == 0
    want = expected_chunks(expected, encoder.tokenizer, base_model)
    store = EdgeVectorStore(worker.data_dir / "qdrant", f"{NAMESPACE}-chunks", base_model.dim)
    try:
        got = {(c.doc_id, c.chunk, c.version, c.text) for c in store.all_chunks()}
        assert got == want
        assert len(store.all_chunks()) == len(want)
    finally:
        store.close()

    # restart on the same shard and re-deliver everything: the index does not change
    worker.start()
    applied_before = documents_applied(worker)
    produce(broker.bootstrap_servers, topic, stream)
    worker.wait_for(lambda: documents_applied(worker) - applied_before >= len(good), 120, "re-delivery applied")
    letters = consume_all(broker.bootstrap_servers, f"{NAMESPACE}.deadletter", 2 * len(bad), timeout_s=60)
    assert len(letters) == 2 * len(bad)
    assert worker.stop() == 0
    store = EdgeVectorStore(worker.data_dir / "qdrant", f"{NAMESPACE}-chunks", base_model.dim)
    try:
        assert {(c.doc_id, c.chunk, c.version, c.text) for c in store.all_chunks()} == want
    finally:
        store.close()
