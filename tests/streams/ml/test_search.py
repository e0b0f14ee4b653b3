from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from schemas import DocumentEvent
from streams.batching import MicroBatcher
from streams.devtools.beir import BeirDataset, load_beir
from streams.devtools.identifier_set import write_identifier_set
from streams.ml.chunking import Chunker
from streams.ml.indexer import DocumentIndexer
from streams.ml.search import Searcher, SearchRequest, normalize_query
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from streams.state.sparse import Bm25Encoder
from streams.state.store import PUBLIC, Access, SearchHit, VectorQuery

DOCS = {
    "tea": "Green tea is steeped at about 80 degrees Celsius for two minutes.",
    "bikes": "A bicycle chain should be cleaned and oiled every few hundred kilometres.",
    "kafka": "Kafka topics are split into partitions; a key always maps to the same partition.",
}


@pytest.fixture
def store(tmp_path: Path, encoder: OnnxEncoder) -> Iterator[EdgeVectorStore]:
    backend = EdgeVectorStore(tmp_path / "q", "chunks", encoder.dim)
    DocumentIndexer(backend, encoder, Chunker(encoder.tokenizer, 128, 16, encoder.max_tokens), Bm25Encoder()).apply([
        DocumentEvent(doc_id=d, version=1, op="upsert", text=t, source="manual" if d == "bikes" else "web")
        for d, t in DOCS.items()])
    yield backend
    backend.close()


def test_batched_answers_keep_request_order_and_honour_k_and_filter(encoder: OnnxEncoder,
                                                                    store: EdgeVectorStore) -> None:
    searcher = Searcher(encoder, store)
    results = searcher.search_many([
        SearchRequest("how hot should water be for tea", 1),
        SearchRequest("which partition does a key go to", 2),
        SearchRequest("which partition does a key go to", 3, {"source": "manual"}),
    ])
    assert [h.doc_id for h in results[0].hits] == ["tea"]
    assert results[1].hits[0].doc_id == "kafka" and len(results[1].hits) == 2
    assert [h.doc_id for h in results[2].hits] == ["bikes"]
    assert all(r.model_version == encoder.version == r.index_version for r in results)


def test_duplicate_queries_come_from_the_cache(encoder: OnnxEncoder, store: EdgeVectorStore) -> None:
    searcher = Searcher(encoder, store)
    first = searcher.search("Tea temperature?", 2)
    again = searcher.search("  tea   TEMPERATURE? ", 2)
    other_k = searcher.search("tea temperature?", 3)
    assert not first.cached and again.cached and not other_k.cached
    assert [h.doc_id for h in again.hits] == [h.doc_id for h in first.hits]


def test_cache_is_keyed_by_versions_and_expires(encoder: OnnxEncoder, store: EdgeVectorStore) -> None:
    searcher = Searcher(encoder, store, cache_ttl_s=0.2)
    searcher.search("tea", 1)
    searcher.index_version = "v2"  # a new index: old answers must not be served
    assert not searcher.search("tea", 1).cached
    assert searcher.search("tea", 1).cached
    time.sleep(0.3)
    assert not searcher.search("tea", 1).cached


def test_disabled_cache_never_hits(encoder: OnnxEncoder, store: EdgeVectorStore) -> None:
    searcher = Searcher(encoder, store, cache_size=0)
    searcher.search("tea", 1)
    assert not searcher.search("tea", 1).cached


def test_invalid_filter_is_refused(encoder: OnnxEncoder, store: EdgeVectorStore) -> None:
    with pytest.raises(ValueError, match="cannot filter"):
        Searcher(encoder, store).search("tea", 1, {"text": "x"})


def test_normalization_only_drops_what_the_uncased_model_ignores() -> None:
    assert normalize_query("  Hello\tWORLD ") == "hello world"
    assert normalize_query("hello, world") != normalize_query("hello world")


def test_micro_batcher_groups_concurrent_requests() -> None:
    batches: list[list[int]] = []

    async def run(requests: Sequence[int]) -> list[int]:
        batches.append(list(requests))
        return [r * 10 for r in requests]

    async def scenario() -> tuple[list[int], float]:
        batcher = MicroBatcher(run, max_size=4)
        together = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        started = time.perf_counter()
        await batcher.submit(99)
        return together, time.perf_counter() - started

    together, lone_wait = asyncio.run(scenario())
    assert together == [0, 10, 20, 30, 40, 50]
    assert batches[:2] == [[0, 1, 2, 3], [4, 5]] and batches[2] == [99]
    assert lone_wait < 0.05  # an idle batcher does not wait for company


def test_micro_batcher_propagates_failures() -> None:
    async def run(requests: Sequence[int]) -> list[int]:
        raise RuntimeError("store down")

    async def scenario() -> None:
        await MicroBatcher(run, max_size=8).submit(1)

    with pytest.raises(RuntimeError, match="store down"):
        asyncio.run(scenario())


def test_the_cache_is_bounded_by_bytes_and_a_write_generation_invalidates_it(encoder: OnnxEncoder,
                                                                             store: EdgeVectorStore) -> None:
    searcher = Searcher(encoder, store, cache_size=1_000, cache_bytes=4_000)
    for i in range(30):
        searcher.search(f"tea question number {i}", 3)
    assert searcher._cache is not None and searcher._cache.currsize <= 4_000 and len(searcher._cache) < 30
    searcher.search("kafka partitions", 1)
    assert searcher.search("kafka partitions", 1).cached
    searcher.invalidate()
    assert not searcher.search("kafka partitions", 1).cached


def test_modes_answer_in_the_store_and_say_which_answered(encoder: OnnxEncoder, store: EdgeVectorStore,
                                                          tmp_path: Path) -> None:
    searcher = Searcher(encoder, store, sparse=Bm25Encoder(), cache_size=0)
    for mode in ("dense", "sparse", "hybrid"):
        result = searcher.search("bicycle chain oiled", 2, mode=mode)  # type: ignore[arg-type]
        assert result.mode == mode and result.hits[0].doc_id == "bikes"
    assert searcher.search("partitions", 3, mode="sparse").hits[0].doc_id == "kafka"  # an exact term
    assert [h.doc_id for h in searcher.search("tea", 3, {"source": "manual"}, mode="sparse").hits] == []
    without_bm25 = Searcher(encoder, store)  # no sparse encoder at hand: answered dense, and it says so
    assert without_bm25.search("bicycle chain", 1, mode="hybrid").mode == "dense"
    older = EdgeVectorStore(tmp_path / "older", "chunks", encoder.dim, sparse=False)
    try:
        assert Searcher(encoder, older, sparse=Bm25Encoder()).search("x", 1, mode="sparse").mode == "dense"
    finally:
        older.close()


def test_document_level_answers_hold_one_hit_per_document(encoder: OnnxEncoder, tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "docs", "chunks", encoder.dim)
    long_tea = " ".join(f"Green tea note {i}: steep it at eighty degrees for two minutes." for i in range(40))
    try:
        DocumentIndexer(store, encoder, Chunker(encoder.tokenizer, 24, 4, encoder.max_tokens), Bm25Encoder()).apply(
            [DocumentEvent(doc_id="tea", version=1, op="upsert", text=long_tea)]
            + [DocumentEvent(doc_id=f"other-{i}", version=1, op="upsert", text=f"Note {i} about rivers and otters.")
               for i in range(5)])
        searcher = Searcher(encoder, store, sparse=Bm25Encoder(), cache_size=0)
        chunks = searcher.search("steep green tea", 5)
        assert [h.doc_id for h in chunks.hits] == ["tea"] * 5  # chunk-level: one document fills the top
        documents = searcher.search("steep green tea", 4, group="doc")
        assert len(documents.hits) == 4 and len({h.doc_id for h in documents.hits}) == 4
        assert documents.hits[0].doc_id == "tea" and documents.group == "doc"
        assert documents.hits[0].score == chunks.hits[0].score  # the document scores as its best chunk
    finally:
        store.close()


def test_the_cache_key_holds_the_mode_and_the_grouping(encoder: OnnxEncoder, store: EdgeVectorStore) -> None:
    searcher = Searcher(encoder, store, sparse=Bm25Encoder())
    assert not searcher.search("tea", 2, mode="dense").cached
    assert not searcher.search("tea", 2, mode="sparse").cached
    assert not searcher.search("tea", 2, mode="dense", group="doc").cached
    assert searcher.search("tea", 2, mode="sparse").cached


@pytest.fixture(scope="module")
def identifier_notes(tmp_path_factory: pytest.TempPathFactory, encoder: OnnxEncoder
                     ) -> Iterator[tuple[EdgeVectorStore, BeirDataset]]:
    """The exact-identifier set (200 notes, 40 identifiers and their look-alikes) indexed with both vectors."""
    folder = tmp_path_factory.mktemp("identifiers")
    write_identifier_set(folder, seed=3)
    dataset = load_beir(folder)
    store = EdgeVectorStore(folder / "q", "chunks", encoder.dim)
    DocumentIndexer(store, encoder, Chunker(encoder.tokenizer, 128, 16, encoder.max_tokens), Bm25Encoder()).apply(
        [DocumentEvent(doc_id=d, version=1, op="upsert", text=text) for d, (_, text) in dataset.corpus.items()])
    yield store, dataset
    store.close()


def firsts(searcher: Searcher, dataset: BeirDataset, mode: str, group: str = "chunk", limit: int = 1) -> int:
    """How many identifier queries answer the note that holds the identifier first."""
    results = searcher.search_many([SearchRequest(text, limit, mode=mode, group=group)  # type: ignore[arg-type]
                                    for text in dataset.queries.values()])
    return sum(1 for q, result in zip(dataset.queries, results, strict=True)
               if result.hits and dataset.qrels[q].get(result.hits[0].doc_id))


def test_exact_identifiers_are_answered_first_in_lexical_modes(
        encoder: OnnxEncoder, identifier_notes: tuple[EdgeVectorStore, BeirDataset]) -> None:
    store, dataset = identifier_notes
    exact = Searcher(encoder, store, sparse=Bm25Encoder(), cache_size=0)
    fused = Searcher(encoder, store, sparse=Bm25Encoder(), cache_size=0, exact_first=False)
    assert len(dataset.queries) == 40
    for group in ("chunk", "doc"):
        assert firsts(exact, dataset, "hybrid", group) >= 39  # k=1: found among the candidates, not the top k
        assert firsts(exact, dataset, "sparse", group) >= 39
    assert firsts(fused, dataset, "hybrid") < firsts(exact, dataset, "hybrid")  # what the boost is for
    text = next(iter(dataset.queries.values()))
    assert exact.search(text, 10, mode="dense").hits == fused.search(text, 10, mode="dense").hits  # dense as is
    question = "the controller logged an alarm and the unit refused to restart"
    assert exact.search(question, 10).hits == fused.search(question, 10).hits  # no identifiers: fused as is


class CountingStore:
    """A store that records how many hits each search asked for."""

    def __init__(self, inner: EdgeVectorStore) -> None:
        self.inner = inner
        self.asked: list[int] = []
        self.modes = inner.modes

    def search(self, query: VectorQuery, limit: int, filter_: object = None, access: Access = PUBLIC
               ) -> list[SearchHit]:
        self.asked.append(limit)
        return self.inner.search(query, limit, filter_, access)  # type: ignore[arg-type]


def test_only_a_query_with_identifiers_reads_the_whole_window(
        encoder: OnnxEncoder, identifier_notes: tuple[EdgeVectorStore, BeirDataset]) -> None:
    store = CountingStore(identifier_notes[0])
    searcher = Searcher(encoder, store, sparse=Bm25Encoder(), cache_size=0, candidates=50)  # type: ignore[arg-type]
    searcher.search("the controller logged an alarm", 3)
    searcher.search("E4821", 3, mode="dense")
    searcher.search("E4821", 3)
    searcher.search("E4821", 3, group="doc")
    assert store.asked == [3, 3, 50, 50]


def test_identifiers_keep_their_case_in_the_cache_key(encoder: OnnxEncoder,
                                                      identifier_notes: tuple[EdgeVectorStore, BeirDataset]) -> None:
    store, dataset = identifier_notes
    camel = next(text for text in dataset.queries.values() if text[0].islower() and "_" not in text)
    searcher = Searcher(encoder, store, sparse=Bm25Encoder())
    lower = searcher.search(camel.lower(), 1)  # not an identifier: fused order
    exact = searcher.search(camel, 1)
    assert not exact.cached and camel in exact.hits[0].text
    assert searcher.search(camel.upper(), 1).cached and searcher.search(camel, 1).cached  # neither/both alike
    assert lower.hits == searcher.search(camel.lower(), 1).hits


def test_an_exact_match_the_caller_may_not_read_stays_hidden(encoder: OnnxEncoder, tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "acl", "chunks", encoder.dim)
    try:
        DocumentIndexer(store, encoder, Chunker(encoder.tokenizer, 128, 16, encoder.max_tokens), Bm25Encoder()).apply([
            DocumentEvent(doc_id="secret", version=1, op="upsert", text="The panel showed E4821 twice.",
                          acl=["group:ops"]),
            DocumentEvent(doc_id="alike", version=1, op="upsert", text="The panel showed E4812 twice."),
            DocumentEvent(doc_id="other", version=1, op="upsert", text="Bearings were greased.")])
        searcher = Searcher(encoder, store, sparse=Bm25Encoder())
        for group in ("chunk", "doc"):
            public = searcher.search("E4821", 3, group=group)  # type: ignore[arg-type]
            assert "secret" not in {h.doc_id for h in public.hits} and public.hits
            ops = searcher.search("E4821", 3, group=group, access=Access.of(["group:ops"]))  # type: ignore[arg-type]
            assert ops.hits[0].doc_id == "secret"
    finally:
        store.close()
