"""The index as a materialized view: versions, deletes, duplicates, unchanged content, shrinking docs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas import DocumentEvent
from streams.ml.chunking import Chunker
from streams.ml.indexer import DocumentIndexer
from streams.state.edge_store import EdgeVectorStore
from streams.state.embedding_cache import EmbeddingCache
from streams.state.encoder import OnnxEncoder
from streams.state.known_vectors import KnownVectors, write_known_vectors
from streams.state.store import Access, VectorQuery

LONG = " ".join(f"Paragraph {i} explains how consumers commit offsets after the write." for i in range(40))


def upsert(doc_id: str, version: int, text: str, **extra: object) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, version=version, op="upsert", text=text, **extra)  # type: ignore[arg-type]


def delete(doc_id: str, version: int) -> DocumentEvent:
    return DocumentEvent(doc_id=doc_id, version=version, op="delete")


@pytest.fixture
def store(tmp_path: Path, encoder: OnnxEncoder) -> Iterator[EdgeVectorStore]:
    backend = EdgeVectorStore(tmp_path / "qdrant", "chunks", encoder.dim)
    yield backend
    backend.close()


@pytest.fixture
def indexer(store: EdgeVectorStore, encoder: OnnxEncoder) -> DocumentIndexer:
    return DocumentIndexer(store, encoder, Chunker(encoder.tokenizer, 32, 8, encoder.max_tokens))


def versions(store: EdgeVectorStore, doc_id: str) -> list[tuple[int, int]]:
    return [(c.chunk, c.version) for c in store.chunks(doc_id)]


def test_new_document_is_chunked_embedded_and_searchable(indexer: DocumentIndexer,
                                                         store: EdgeVectorStore) -> None:
    outcome = indexer.apply([upsert("a", 1, LONG, source="manual"), upsert("b", 1, "Bananas are yellow fruit.")])
    assert outcome.embedded == 2 and outcome.chunks == store.count_chunks() > 2
    assert store.search(VectorQuery(indexer.encoder.encode(["yellow fruit"])[0]), 1)[0].doc_id == "b"
    state = store.get_documents(["a"])["a"]
    assert (state.version, state.deleted, state.chunks, state.source) == (1, False, len(store.chunks("a")), "manual")


def test_shorter_version_removes_surplus_chunks(indexer: DocumentIndexer, store: EdgeVectorStore) -> None:
    indexer.apply([upsert("a", 1, LONG)])
    assert len(store.chunks("a")) > 3
    indexer.apply([upsert("a", 2, "Now it is only one short sentence.")])
    assert versions(store, "a") == [(0, 2)]
    assert store.chunks("a")[0].text == "Now it is only one short sentence."


def test_older_and_duplicate_versions_are_ignored(indexer: DocumentIndexer, store: EdgeVectorStore) -> None:
    indexer.apply([upsert("a", 5, "version five")])
    outcome = indexer.apply([upsert("a", 3, "version three"), upsert("a", 5, "version five again")])
    assert outcome.stale == 2 and outcome.embedded == 0
    assert [c.text for c in store.chunks("a")] == ["version five"]


def test_highest_version_in_a_batch_wins_whatever_the_order(indexer: DocumentIndexer,
                                                            store: EdgeVectorStore) -> None:
    indexer.apply([upsert("a", 3, "three"), upsert("a", 1, "one"), upsert("a", 2, "two")])
    assert [(c.text, c.version) for c in store.chunks("a")] == [("three", 3)]


def test_delete_removes_all_chunks_and_blocks_older_upserts(indexer: DocumentIndexer,
                                                            store: EdgeVectorStore) -> None:
    indexer.apply([upsert("a", 1, LONG), upsert("b", 1, "keep me")])
    indexer.apply([delete("a", 2)])
    assert store.chunks("a") == [] and len(store.chunks("b")) == 1
    indexer.apply([upsert("a", 1, "late, older upsert")])
    assert store.chunks("a") == [] and store.get_documents(["a"])["a"].deleted
    indexer.apply([upsert("a", 3, "revived")])
    assert [c.text for c in store.chunks("a")] == ["revived"]


def test_a_metadata_change_reaches_filters_without_re_embedding(indexer: DocumentIndexer,
                                                                 store: EdgeVectorStore) -> None:
    indexer.apply([upsert("long", 1, LONG, metadata={"lang": "de", "year": 2023})])
    outcome = indexer.apply([upsert("long", 2, LONG, metadata={"lang": "en", "year": 2024})])
    assert (outcome.unchanged, outcome.embedded) == (1, 0)  # the same text: its vectors kept
    assert outcome.replaced == 1  # but cached answers filtered on it may be wrong now: they are dropped
    assert indexer.apply([upsert("long", 3, LONG, metadata={"year": 2024, "lang": "en"})]).replaced == 0
    query = VectorQuery(indexer.encoder.encode(["consumers commit offsets"])[0])
    assert store.search(query, 50, {"metadata.lang": "de"}) == []
    assert {h.doc_id for h in store.search(query, 50, {"metadata.year": {"gte": 2024}})} == {"long"}
    assert {c.metadata["lang"] for c in store.chunks("long")} == {"en"}  # on every chunk


def test_an_acl_change_reaches_searches_without_re_embedding(indexer: DocumentIndexer,
                                                              store: EdgeVectorStore) -> None:
    indexer.apply([upsert("long", 1, LONG, acl=["group:eng"])])
    query = VectorQuery(indexer.encoder.encode(["consumers commit offsets"])[0])
    eng, hr = Access.of(["group:eng"]), Access.of(["group:hr"])
    assert store.search(query, 50) == [] and store.search(query, 50, None, hr) == []
    assert {h.doc_id for h in store.search(query, 50, None, eng)} == {"long"}
    outcome = indexer.apply([upsert("long", 2, LONG, acl=["group:hr"])])
    assert (outcome.unchanged, outcome.embedded, outcome.replaced) == (1, 0, 1)  # cached answers are dropped
    assert store.search(query, 50, None, eng) == [] and {h.doc_id for h in store.search(query, 50, None, hr)} == {
        "long"}
    assert indexer.apply([upsert("long", 3, LONG, acl=["group:hr", "group:hr"])]).replaced == 0  # the same set
    assert indexer.apply([upsert("long", 4, LONG)]).replaced == 1  # public now
    assert {h.doc_id for h in store.search(query, 50)} == {"long"}
    assert store.get_documents(["long"])["long"].acl is None


def test_a_tombstone_keeps_the_acl_of_what_it_deleted(indexer: DocumentIndexer, store: EdgeVectorStore) -> None:
    indexer.apply([upsert("secret", 1, "the plan", acl=["group:board"]), delete("gone", 1)])
    indexer.apply([delete("secret", 2)])
    assert store.get_documents(["secret"])["secret"].acl == ["group:board"]
    assert store.get_documents(["gone"])["gone"].acl is None


def test_a_write_that_failed_leaves_its_document_to_whom_both_acls_allow(indexer: DocumentIndexer,
                                                                         store: EdgeVectorStore) -> None:
    """A failed event that narrowed the acl (eng and hr, then hr only) still revokes: its chunks are restored to
    the ledger's text, readable by the principals both versions name; the next event's acl applies whole."""
    indexer.apply([upsert("plan", 1, LONG, acl=["group:eng", "group:hr"])])
    query = VectorQuery(indexer.encoder.encode(["consumers commit offsets"])[0])
    readers = {who: Access.of([who]) for who in ("group:eng", "group:hr")}
    indexer.restore("plan", upsert("plan", 2, "a newer text that could not be embedded", acl=["group:hr"]))
    assert {who for who, access in readers.items() if store.search(query, 5, None, access)} == {"group:hr"}
    assert {c.text for c in store.chunks("plan")} <= {c.text for c in indexer.chunker.split(LONG)}
    indexer.restore("plan", upsert("plan", 3, "public now, but it failed too"))  # public ∩ hr: hr
    assert {who for who, access in readers.items() if store.search(query, 5, None, access)} == {"group:hr"}
    indexer.restore("plan", upsert("plan", 4, "eng only, and failed", acl=["group:eng"]))  # hr ∩ eng: nobody
    assert store.chunks("plan") and not any(store.search(query, 5, None, a) for a in (*readers.values(),
                                                                                      Access.of(["x:y"])))
    assert store.get_documents(["plan"])["plan"].acl == []
    indexer.apply([upsert("plan", 5, LONG, acl=["group:eng"])])  # the same text: re-stamped, not re-embedded
    assert {who for who, access in readers.items() if store.search(query, 5, None, access)} == {"group:eng"}
    indexer.restore("plan", upsert("plan", 5, LONG))  # a redelivered event, not newer: the ledger's acl
    assert {who for who, access in readers.items() if store.search(query, 5, None, access)} == {"group:eng"}
    indexer.restore("plan", delete("plan", 6))  # a delete that failed: nobody reads what it meant to remove
    assert store.chunks("plan") and not any(store.search(query, 5, None, a) for a in readers.values())


def test_unchanged_content_is_not_re_embedded(indexer: DocumentIndexer, store: EdgeVectorStore) -> None:
    indexer.apply([upsert("a", 1, LONG)])
    outcome = indexer.apply([upsert("a", 2, LONG)])
    assert (outcome.unchanged, outcome.embedded, outcome.chunks) == (1, 0, 0)
    assert {v for _, v in versions(store, "a")} == {2}
    assert store.get_documents(["a"])["a"].version == 2


def test_redelivery_of_a_whole_stream_changes_nothing(indexer: DocumentIndexer, store: EdgeVectorStore) -> None:
    stream = [upsert("a", 1, LONG), upsert("b", 1, "bee"), delete("b", 2), upsert("a", 2, "short a")]
    indexer.apply(stream)
    before = sorted((c.doc_id, c.chunk, c.version, c.text) for c in store.all_chunks())
    for event in stream:
        indexer.apply([event])
    assert sorted((c.doc_id, c.chunk, c.version, c.text) for c in store.all_chunks()) == before


def test_crash_between_chunk_write_and_ledger_is_repaired(indexer: DocumentIndexer,
                                                          store: EdgeVectorStore) -> None:
    """Chunks of v2 written, ledger not (crash); then v3, shorter, arrives: v2's extra chunks must go."""
    indexer.apply([upsert("a", 1, "one sentence")])
    ledger_before = store.get_documents(["a"])
    indexer.apply([upsert("a", 2, LONG)])
    store.put_documents(list(ledger_before.values()))  # roll the ledger back as if the crash hit
    indexer.apply([upsert("a", 3, "short again")])
    assert versions(store, "a") == [(0, 3)]


def test_equal_versions_apply_once_whatever_the_batching(indexer: DocumentIndexer, store: EdgeVectorStore) -> None:
    indexer.apply([upsert("a", 2, "first"), upsert("a", 2, "second")])
    indexer.apply([upsert("b", 2, "first")])
    indexer.apply([upsert("b", 2, "second")])
    assert [c.text for c in store.chunks("a")] == [c.text for c in store.chunks("b")] == ["first"]


class EncoderDown:
    """The encoder, unable to encode (an outage while a failed write is restored)."""

    def __init__(self, encoder: OnnxEncoder) -> None:
        self._encoder = encoder

    def __getattr__(self, name: str) -> object:
        return getattr(self._encoder, name)

    def encode(self, texts: list[str]) -> object:
        raise RuntimeError("the encoder is down")


def test_a_revocation_holds_even_when_restoring_cannot_encode(indexer: DocumentIndexer, store: EdgeVectorStore) -> None:
    indexer.apply([upsert("plan", 1, LONG, acl=["group:eng", "group:hr"])])
    query = VectorQuery(indexer.encoder.encode(["consumers commit offsets"])[0])
    down = DocumentIndexer(store, EncoderDown(indexer.encoder), indexer.chunker)  # type: ignore[arg-type]
    down.restore("plan", upsert("plan", 2, "the edit that failed", acl=["group:hr"]))  # every chunk still there:
    assert store.search(query, 5, None, Access.of(["group:eng"])) == []  # restored with no encoder call at all
    assert store.search(query, 5, None, Access.of(["group:hr"]))
    store.delete_chunks("plan", from_chunk=2)  # a write that failed having lost chunks: they need the encoder
    with pytest.raises(RuntimeError):
        down.restore("plan", upsert("plan", 3, "another edit that failed", acl=["group:hr"]))
    assert store.search(query, 5, None, Access.of(["group:eng"])) == []
    assert store.search(query, 5, None, Access.of(["group:hr"]))


class CountingEncoder:
    """The real encoder, counting the texts it was asked to embed."""

    def __init__(self, inner: OnnxEncoder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encode(self, texts: list[str]) -> object:
        self.texts += texts
        return self.inner.encode(texts)


def test_an_edit_embeds_only_the_chunks_whose_text_changed(store: EdgeVectorStore, encoder: OnnxEncoder,
                                                           tmp_path: Path) -> None:
    counting = CountingEncoder(encoder)
    indexer = DocumentIndexer(store, counting, Chunker(encoder.tokenizer, 32, 8, encoder.max_tokens))  # type: ignore[arg-type]
    first = indexer.apply([upsert("a", 1, LONG)])
    assert first.encoded == first.chunks == len(counting.texts) > 10
    before = {c.chunk: (c.text, c.vector) for c in store.chunks("a", with_vectors=True)}
    counting.texts.clear()
    edited = LONG.replace("Paragraph 39 explains", "Paragraph 39 (edited) explains")  # the last sentence
    outcome = indexer.apply([upsert("a", 2, edited)])
    assert outcome.embedded == 1 and 1 <= outcome.encoded == len(counting.texts) <= 2
    after = store.chunks("a", with_vectors=True)
    assert [c.version for c in after] == [2] * len(after) and store.get_documents(["a"])["a"].version == 2
    for chunk in after:  # every unchanged chunk kept exactly its vector; the changed ones were embedded
        if chunk.text == before.get(chunk.chunk, (None,))[0]:
            assert (chunk.vector == before[chunk.chunk][1]).all()
        else:
            assert chunk.text in counting.texts
    fresh = EdgeVectorStore(tmp_path / "fresh", "chunks", encoder.dim)
    try:
        DocumentIndexer(fresh, encoder, Chunker(encoder.tokenizer, 32, 8, encoder.max_tokens)).apply(
            [upsert("a", 2, edited)])
        scratch = fresh.chunks("a", with_vectors=True)
        assert [c.text for c in scratch] == [c.text for c in after]  # as if embedded from scratch (batching moves
        assert all(float(a.vector @ b.vector) > 0.9999 for a, b in zip(scratch, after, strict=True))  # the 6th digit)
    finally:
        fresh.close()


def test_vectors_the_version_shipped_with_are_not_computed_again(store: EdgeVectorStore, encoder: OnnxEncoder,
                                                                 tmp_path: Path) -> None:
    chunker = Chunker(encoder.tokenizer, 32, 8, encoder.max_tokens)
    texts = [c.text for c in chunker.split(LONG)]
    write_known_vectors(tmp_path, texts[:-1], encoder.encode(texts[:-1]))  # the trainer's, all but the last chunk
    counting = CountingEncoder(encoder)
    indexer = DocumentIndexer(store, counting, chunker, known=KnownVectors.of(tmp_path))  # type: ignore[arg-type]
    outcome = indexer.apply([upsert("a", 1, LONG)])
    assert outcome.chunks == len(texts) and outcome.encoded == 1 and counting.texts == texts[-1:]
    assert store.search(VectorQuery(encoder.encode(["consumers commit offsets"])[0]), 1)[0].doc_id == "a"


BOILERPLATE = ("This page is part of the operations handbook. Report mistakes to the platform team. "
               "Do not copy it outside the company.")


B_FIRST = "Consumers commit offsets once the write reached every replica."
A_TEXT = f"Brokers keep the records of a partition in the order they came.\n\n{BOILERPLATE}"
B_TEXT = f"{B_FIRST}\n\n{BOILERPLATE}"


def test_a_chunk_the_process_embedded_lately_is_not_encoded_again(store: EdgeVectorStore, encoder: OnnxEncoder,
                                                                  tmp_path: Path) -> None:
    chunker = Chunker(encoder.tokenizer, 32, 8, encoder.max_tokens)
    cache = EmbeddingCache(2**20)
    counting = CountingEncoder(encoder)
    indexer = DocumentIndexer(store, counting, chunker, cache=cache, weights="v1/fp32")  # type: ignore[arg-type]
    indexer.apply([upsert("a", 1, A_TEXT)])
    counting.texts.clear()
    outcome = indexer.apply([upsert("b", 1, B_TEXT)])  # another batch
    assert (outcome.chunks, outcome.encoded, outcome.cached) == (2, 1, 1)
    assert counting.texts == [B_FIRST]
    # A reindex with the same weights (another collection, the same process) finds every chunk in the cache; an
    # encoder of other weights or kind finds none.
    copy = EdgeVectorStore(tmp_path / "copy", "chunks", encoder.dim)
    try:
        counting.texts.clear()
        same = DocumentIndexer(copy, counting, chunker, cache=cache, weights="v1/fp32")  # type: ignore[arg-type]
        assert same.apply([upsert("b", 1, B_TEXT)]).encoded == 0
        assert counting.texts == []
        other = DocumentIndexer(copy, counting, chunker, cache=cache, weights="v1/int8")  # type: ignore[arg-type]
        assert other.apply([upsert("a", 1, A_TEXT)]).encoded == 2
    finally:
        copy.close()
    # Restoring a document whose chunks a failed write lost takes its vectors from the cache too.
    store.delete_chunks("b")
    counting.texts.clear()
    indexer.restore("b")
    assert counting.texts == [] and [c.text for c in store.chunks("b")] == [B_FIRST, BOILERPLATE]
