"""A trainer's copy of the index applies `documents` as the ingest agent does: valid records in order (upserts,
updates, deletes), invalid ones skipped, and a record whose write fails alone skipped with its chunks restored
while its neighbours are applied."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from schemas import DocumentEvent
from streams.devtools.harness import Harness
from streams.index_replica import IndexReplica, valid_documents
from streams.validation import RawMessage


def raw(offset: int, doc_id: str, value: object) -> RawMessage:
    return RawMessage("documents", 0, offset, doc_id.encode(), json.dumps(value).encode())


def test_only_what_the_ingest_agent_would_apply_is_applied() -> None:
    messages = [raw(0, "a", {"doc_id": "a", "version": 1, "op": "upsert", "text": "green tea"}),
                raw(1, "b", {"doc_id": "b", "version": "one", "op": "upsert", "text": "x"}),  # invalid
                raw(2, "c", {"doc_id": "z", "version": 1, "op": "upsert", "text": "key mismatch"}),
                RawMessage("documents", 0, 3, b"d", b"not json"),
                raw(4, "a", {"doc_id": "a", "version": 2, "op": "delete"})]
    assert [(e.doc_id, e.version, e.op) for e in valid_documents(messages)] == [("a", 1, "upsert"), ("a", 2, "delete")]


def test_a_write_that_fails_alone_is_skipped_and_its_neighbours_applied(tmp_path: Path) -> None:
    with Harness(tmp_path) as harness:
        serving, threads = harness.shared.serving, harness.shared.threads
        applied, restored = serving.apply_documents, []

        def apply_documents(events: list[DocumentEvent]) -> object:
            if any(e.doc_id == "poison" for e in events):
                raise ValueError("the store refuses this document")
            return applied(events)

        serving.apply_documents = apply_documents  # type: ignore[method-assign]
        serving.restore_document = lambda doc_id, failed: restored.append((doc_id, failed.version))  # type: ignore[method-assign]
        replica = IndexReplica(harness.settings, serving, threads)
        events = [DocumentEvent(doc_id=d, version=1, op="upsert", text=f"note {d}") for d in ("a", "poison", "b")]
        asyncio.run(replica.apply([*events, DocumentEvent(doc_id="a", version=2, op="delete")]))
        states = serving.current.store.get_documents(["a", "b", "poison"])
        assert states["a"].deleted and states["a"].version == 2 and not states["b"].deleted
        assert "poison" not in states and restored == [("poison", 1)]  # told which event failed: its acl counts
