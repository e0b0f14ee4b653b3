"""Copying a ledger into another model's collection: complete, tombstones kept, idempotent, incremental."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from schemas import DocumentEvent
from streams.ml.chunking import Chunker
from streams.ml.indexer import DocumentIndexer
from streams.ml.rollout import copy_documents
from streams.ml.search import Searcher
from streams.ml.serving import Serving
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from streams.state.store import Access


def serving(path: Path, encoder: OnnxEncoder) -> Serving:
    store = EdgeVectorStore(path, "chunks", encoder.dim)
    return Serving(encoder.model, encoder, Chunker(encoder.tokenizer, 32, 8, encoder.max_tokens), store,
                   Searcher(encoder, store, cache_size=0))


@pytest.fixture
def pair(tmp_path: Path, encoder: OnnxEncoder) -> Iterator[tuple[Serving, Serving]]:
    source, target = serving(tmp_path / "blue", encoder), serving(tmp_path / "green", encoder)
    yield source, target
    source.close()
    target.close()


def event(doc_id: str, version: int, text: str | None = None) -> DocumentEvent:
    if text is None:
        return DocumentEvent(doc_id=doc_id, version=version, op="delete")
    return DocumentEvent(doc_id=doc_id, version=version, op="upsert", text=text, title=f"T {doc_id}", source="wiki")


def test_copy_reproduces_the_index_and_resumes_without_re_embedding(pair: tuple[Serving, Serving]) -> None:
    source, target = pair
    long_text = " ".join(f"word{i}" for i in range(120))
    DocumentIndexer(source.store, source.encoder, source.chunker).apply(
        [event("a", 2, "green tea at 80 degrees"), event("b", 1, long_text), event("c", 4)])
    states = source.store.all_documents()
    assert copy_documents(states, target) == 2  # a and b embedded, c stays a tombstone
    view = lambda s: sorted((d.doc_id, d.version, d.deleted, d.chunks, d.content_hash) for d in s.store.all_documents())  # noqa: E731
    assert view(target) == view(source)
    assert sorted((c.doc_id, c.chunk, c.text) for c in target.store.all_chunks()) == \
        sorted((c.doc_id, c.chunk, c.text) for c in source.store.all_chunks())
    assert target.searcher.search("green tea", 1).hits[0].doc_id == "a"

    assert copy_documents(states, target) == 0  # a resumed or repeated copy re-embeds nothing
    DocumentIndexer(source.store, source.encoder, source.chunker).apply([event("a", 3, "oolong at 90 degrees")])
    assert copy_documents(list(source.store.get_documents(["a", "b"]).values()), target) == 1
    assert view(target) == view(source)


def both_hold_plan_then_one_narrows(pair: tuple[Serving, Serving], narrowed: Serving) -> None:
    """`plan` at version 1 for eng and hr in both collections; then, in `narrowed` only, a write of version 2 for hr
    alone fails half-way (restored to version 1, readable by hr only)."""
    wide = DocumentEvent(doc_id="plan", version=1, op="upsert", text="the plan", acl=["group:eng", "group:hr"])
    for serving_ in pair:
        DocumentIndexer(serving_.store, serving_.encoder, serving_.chunker).apply([wide])
    DocumentIndexer(narrowed.store, narrowed.encoder, narrowed.chunker).restore(
        "plan", DocumentEvent(doc_id="plan", version=2, op="upsert", text="a failed edit", acl=["group:hr"]))


def test_a_copy_carries_an_acl_that_a_failed_write_narrowed(pair: tuple[Serving, Serving]) -> None:
    """The target already holds the version, with the wider acl: the source's ledger (narrowed at the same version
    after a failed write) wins, as a rollback to a collection kept from before must show."""
    source, target = pair
    both_hold_plan_then_one_narrows(pair, narrowed=source)
    hr = Access.of(["group:hr"])
    target = replace(target, searcher=Searcher(target.encoder, target.store))  # caching, as serving does
    target.searcher.search("the plan", 1, access=hr)
    assert target.searcher.search("the plan", 1, access=hr).cached
    assert copy_documents(source.store.all_documents(), target) == 0  # re-stamped, not re-embedded
    assert {c.acl for c in target.store.chunks("plan")} == {("group:hr",)}
    assert target.store.get_documents(["plan"])["plan"].acl == ["group:hr"]
    assert not target.searcher.search("the plan", 1, access=hr).cached  # what it held changed: its cache went


def test_a_copy_never_widens_who_may_read_a_version(pair: tuple[Serving, Serving]) -> None:
    """The target narrowed (its own failed write) while the source was not: the copy keeps the narrower acl."""
    source, target = pair
    both_hold_plan_then_one_narrows(pair, narrowed=target)
    copy_documents(source.store.all_documents(), target)
    assert {c.acl for c in target.store.chunks("plan")} == {("group:hr",)}
    assert target.store.get_documents(["plan"])["plan"].acl == ["group:hr"]
