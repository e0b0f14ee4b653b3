"""One contract, every `VectorStore` backend: qdrant-edge (embedded), qdrant-client (`:memory:`), the in-memory
double, and the fault-injection wrapper with no fault planned."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from schemas import InvalidFilter
from streams.state.edge_store import EdgeVectorStore
from streams.state.errors import UnsupportedSearchMode
from streams.state.faults import FaultInjectingStore, FaultPlan
from streams.state.memory_store import InMemoryVectorStore
from streams.state.server_store import ServerVectorStore
from streams.state.sparse import Bm25Encoder
from streams.state.store import (
    INTERNAL,
    PUBLIC,
    READERS,
    Access,
    ChunkPoint,
    DocumentState,
    VectorQuery,
    VectorStore,
    chunk_point_id,
)

DIM = 8


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


def point(doc_id: str, chunk: int, vector: np.ndarray, version: int = 1, source: str | None = None) -> ChunkPoint:
    return ChunkPoint(doc_id=doc_id, chunk=chunk, text=f"{doc_id} chunk {chunk}", version=version,
                      content_hash=f"h{version}", model_version="v1", vector=vector, source=source)


def open_backend(name: str, tmp_path: Path, sparse: bool = True) -> VectorStore:
    """A fresh store of the named backend; `fault-injection-off` is the drill wrapper with no fault planned,
    which must be transparent."""
    if name == "qdrant-edge":
        return EdgeVectorStore(tmp_path / "qdrant", "chunks", DIM, sparse=sparse)
    if name == "qdrant-client":
        return ServerVectorStore.connect(":memory:", "chunks", DIM, sparse=sparse)
    if name == "in-memory-double":
        return InMemoryVectorStore("chunks", DIM)
    return FaultInjectingStore(EdgeVectorStore(tmp_path / "qdrant", "chunks", DIM, sparse=sparse),
                               FaultPlan(tmp_path / "no-faults.json"))


@pytest.fixture(params=["qdrant-edge", "qdrant-client", "in-memory-double", "fault-injection-off"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    backend = open_backend(request.param, tmp_path)
    yield backend
    backend.close()


def test_upsert_then_search_ranks_by_cosine(store: VectorStore) -> None:
    store.upsert_chunks([point("a", 0, unit(1, 0)), point("b", 0, unit(0, 1)), point("c", 0, unit(1, 1))])
    hits = store.search(VectorQuery(unit(1, 0.1)), limit=2)
    assert [h.doc_id for h in hits] == ["a", "c"]
    assert hits[0].score == pytest.approx(float(unit(1, 0.1) @ unit(1, 0)), abs=1e-5)
    assert hits[0].text == "a chunk 0" and hits[0].chunk == 0


def test_upsert_with_same_ids_overwrites(store: VectorStore) -> None:
    store.upsert_chunks([point("a", 0, unit(1, 0), version=1)])
    store.upsert_chunks([point("a", 0, unit(0, 1), version=2)])
    assert store.count_chunks() == 1
    (only,) = store.chunks("a", with_vectors=True)
    assert only.version == 2
    np.testing.assert_allclose(only.vector, unit(0, 1), atol=1e-6)


def test_delete_all_and_surplus_chunks(store: VectorStore) -> None:
    store.upsert_chunks([point("a", i, unit(1, i)) for i in range(5)] + [point("b", 0, unit(0, 1))])
    store.delete_chunks("a", from_chunk=2)
    assert [c.chunk for c in store.chunks("a")] == [0, 1]
    store.delete_chunks("a")
    assert store.chunks("a") == []
    assert [c.doc_id for c in store.all_chunks()] == ["b"]


def test_set_chunk_version_touches_only_that_doc(store: VectorStore) -> None:
    store.upsert_chunks([point("a", 0, unit(1)), point("a", 1, unit(1, 1)), point("b", 0, unit(0, 1))])
    store.set_chunk_version("a", 7)
    assert {c.version for c in store.chunks("a")} == {7}
    assert store.chunks("b")[0].version == 1


def test_search_filter_by_payload(store: VectorStore) -> None:
    store.upsert_chunks([point("a", 0, unit(1, 0), source="wiki"), point("b", 0, unit(1, 0.2), source="faq")])
    assert [h.doc_id for h in store.search(VectorQuery(unit(1, 0)), 10, {"source": "faq"})] == ["b"]
    with pytest.raises(InvalidFilter, match="cannot filter"):
        store.search(VectorQuery(unit(1, 0)), 10, {"text": "x"})


CATALOGUE = {  # doc_id -> its metadata
    "de-2020": {"lang": "de", "year": 2020, "published": "2020-05-01", "score": 0.5, "draft": False},
    "en-2023": {"lang": "en", "year": 2023, "published": "2023-01-02T08:00:00+02:00", "draft": True},
    "fr-2024": {"lang": "fr", "year": 2024, "published": "2024-12-31T23:00:00Z"},
    "plain": {},
}


@pytest.mark.parametrize(("filter_", "expected"), [
    ({"metadata.lang": "de"}, {"de-2020"}),
    ({"metadata.lang": {"any": ["de", "fr"]}}, {"de-2020", "fr-2024"}),
    ({"metadata.year": {"gte": 2023}}, {"en-2023", "fr-2024"}),
    ({"metadata.year": {"gt": 2020, "lt": 2024}}, {"en-2023"}),
    ({"metadata.year": 2020, "metadata.lang": "de"}, {"de-2020"}),  # AND
    ({"metadata.year": 2020, "metadata.lang": "en"}, set()),
    ({"metadata.published": {"gte": "2023-01-01", "lt": "2024-12-31T23:30:00Z"}}, {"en-2023", "fr-2024"}),
    ({"metadata.published": {"lt": "2023-01-02T07:00:01+01:00"}}, {"de-2020", "en-2023"}),  # offsets compared
    ({"metadata.published": {"lt": "2023-01-02T07:00:00+01:00"}}, {"de-2020"}),  # the same instant is not before
    ({"metadata.draft": {"exists": True}}, {"de-2020", "en-2023"}),
    ({"metadata.draft": True}, {"en-2023"}),
    ({"metadata.draft": False}, {"de-2020"}),
    ({"metadata.score": 0.5}, {"de-2020"}),
    ({"metadata.missing": {"exists": True}}, set()),
    ({"version": {"gte": 1}, "metadata.lang": {"any": ["fr"]}}, {"fr-2024"}),
])
def test_metadata_filters_are_evaluated_inside_the_store(store: VectorStore, filter_: dict, expected: set) -> None:
    store.upsert_chunks([replace(point(doc_id, 0, unit(1, i / 10)), metadata=metadata)
                         for i, (doc_id, metadata) in enumerate(CATALOGUE.items())])
    assert {h.doc_id for h in store.search(VectorQuery(unit(1, 0)), 10, filter_)} == expected


def test_k_asked_means_k_matching_results(store: VectorStore) -> None:
    points = [replace(point(f"d{i}", 0, unit(1, i / 100)), metadata={"lang": "de" if i % 10 == 9 else "en"})
              for i in range(60)]
    store.upsert_chunks(points)  # the six German documents rank last by the query
    hits = store.search(VectorQuery(unit(1, 0)), 5, {"metadata.lang": "de"})
    assert [h.doc_id for h in hits] == ["d9", "d19", "d29", "d39", "d49"]


def test_metadata_of_unchanged_chunks_is_restamped(store: VectorStore) -> None:
    store.upsert_chunks([replace(point("a", 0, unit(1, 0)), metadata={"lang": "de"})])
    store.set_chunk_version("a", 2, {"lang": "en"})  # a new version, same text: nothing re-embedded
    query = VectorQuery(unit(1, 0))
    assert store.search(query, 5, {"metadata.lang": "de"}) == []
    assert [h.doc_id for h in store.search(query, 5, {"metadata.lang": "en"})] == ["a"]
    assert store.chunks("a")[0].metadata == {"lang": "en"}


ACLS: dict[str, list[str] | None] = {"public": None, "eng": ["group:eng"], "alice": ["user:alice", "group:hr"],
                                     "ops": ["group:ops", "group:eng"]}


@pytest.mark.parametrize(("access", "expected"), [
    (PUBLIC, {"public"}),
    (Access.of(None), {"public"}),
    (Access.of(["group:eng"]), {"public", "eng", "ops"}),
    (Access.of(["user:alice"]), {"public", "alice"}),
    (Access.of(["user:bob", "group:ops"]), {"public", "ops"}),
    (Access.of(["group:en", "user:alic", "* public"]), {"public"}),  # exact matches only
    (INTERNAL, {"public", "eng", "alice", "ops"}),
])
def test_a_search_returns_only_what_its_caller_may_read(store: VectorStore, access: Access, expected: set) -> None:
    store.upsert_chunks([replace(point(doc_id, 0, unit(1, i / 10)), acl=acl)
                         for i, (doc_id, acl) in enumerate(ACLS.items())])
    assert {h.doc_id for h in store.search(VectorQuery(unit(1, 0)), 10, None, access)} == expected
    assert {h.doc_id for h in store.search(VectorQuery(unit(1, 0)), 10, {"version": 1}, access)} == expected


def test_k_asked_means_k_readable_results(store: VectorStore) -> None:
    store.upsert_chunks([replace(point(f"d{i}", 0, unit(1, i / 100)), acl=None if i % 10 == 9 else ["group:x"])
                         for i in range(60)])  # the six public documents rank last by the query
    hits = store.search(VectorQuery(unit(1, 0)), 5, None, Access.of(["user:nobody"]))
    assert [h.doc_id for h in hits] == ["d9", "d19", "d29", "d39", "d49"]


def test_an_acl_restamped_on_unchanged_chunks_reaches_searches(store: VectorStore) -> None:
    store.upsert_chunks([replace(point("a", i, unit(1, i / 10)), acl=["group:eng"]) for i in range(3)])
    query, eng = VectorQuery(unit(1, 0)), Access.of(["group:eng"])
    assert store.search(query, 5) == [] and len(store.search(query, 5, None, eng)) == 3
    store.set_chunk_version("a", 2, acl=None)  # made public, nothing re-embedded
    assert len(store.search(query, 5)) == 3
    store.set_chunk_version("a", 3, acl=["user:carol"])
    assert store.search(query, 5) == [] and store.search(query, 5, None, eng) == []
    assert len(store.search(query, 5, None, Access.of(["user:carol"]))) == 3
    store.set_chunk_version("a", 4, {"lang": "en"})  # the acl is kept unless given
    assert len(store.search(query, 5, None, Access.of(["user:carol"]))) == 3
    assert {c.acl for c in store.chunks("a")} == {("user:carol",)}


def test_chunks_written_before_acls_are_public(store: VectorStore) -> None:
    inner = store.inner if isinstance(store, FaultInjectingStore) else store
    old = point("old", 0, unit(1, 0)).payload()
    del old[READERS]  # as a chunk written by an earlier release
    inner._upsert(inner.collection, [(chunk_point_id("old", 0), unit(1, 0).tolist(), None, old)])  # type: ignore[attr-defined]
    store.upsert_chunks([replace(point("new", 0, unit(1, 0.1)), acl=["group:eng"]),
                         replace(point("nobody's", 0, unit(1, 0.2)), acl=[])])  # an empty acl: no reader
    assert store.search(VectorQuery(unit(1, 0)), 5) == []  # a chunk that says nothing is shown to nobody
    inner.publish_unlabelled_chunks()  # type: ignore[attr-defined]  # what opening a store does
    assert [h.doc_id for h in store.search(VectorQuery(unit(1, 0)), 5)] == ["old"]
    assert [h.doc_id for h in store.search(VectorQuery(unit(1, 0)), 5, None, Access.of(["group:eng"]))] == [
        "old", "new"]
    assert store.chunks("old")[0].acl is None and store.chunks("new")[0].acl == ("group:eng",)
    assert store.chunks("nobody's")[0].acl == ()


def test_an_edge_shard_of_an_earlier_release_opens_with_its_chunks_public(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "q", "chunks", DIM)
    old = point("old", 0, unit(1, 0)).payload()
    del old[READERS]
    store._upsert(store.collection, [(chunk_point_id("old", 0), unit(1, 0).tolist(), None, old)])
    store.close()
    reopened = EdgeVectorStore(tmp_path / "q", "chunks", DIM)
    assert [h.doc_id for h in reopened.search(VectorQuery(unit(1, 0)), 5)] == ["old"]
    reopened.close()


def test_document_ledger_round_trip_and_tombstones(store: VectorStore) -> None:
    assert store.get_documents(["a"]) == {}
    store.put_documents([
        DocumentState("a", 3, False, "h", 2, "text a", "A", "wiki", {"lang": "en"}),
        DocumentState("b", 5, True),
    ])
    found = store.get_documents(["a", "b", "missing"])
    assert set(found) == {"a", "b"}
    assert (found["a"].version, found["a"].chunks, found["a"].text, found["a"].metadata) == (3, 2, "text a",
                                                                                           {"lang": "en"})
    assert found["b"].deleted and found["b"].version == 5
    assert found["a"].indexed_at > 0
    assert store.count_documents() == 1
    assert store.count_documents(include_deleted=True) == 2
    assert sorted((d.doc_id, d.version, d.deleted) for d in store.all_documents()) == [("a", 3, False), ("b", 5, True)]


def fill_then_delete_most(store: VectorStore, docs: int = 600) -> set[tuple[str, int]]:
    """5 chunks each of `docs` docs, 60% of the docs deleted again (enough for a vacuum); returns what is left."""
    rng = np.random.default_rng(7)
    names = [f"d{i}" for i in range(docs)]
    store.upsert_chunks([point(d, c, rng.standard_normal(DIM).astype(np.float32)) for d in names for c in range(5)])
    store.put_documents([DocumentState(d, 1, False, "h", 5) for d in names])
    gone = int(docs * 0.6)
    for d in names[:gone]:
        store.delete_chunks(d)
    return {(d, c) for d in names[gone:] for c in range(5)}


def test_compaction_keeps_exactly_the_live_points(store: VectorStore) -> None:
    left = fill_then_delete_most(store)
    assert isinstance(store.compact(), bool)
    assert {(c.doc_id, c.chunk) for c in store.all_chunks()} == left
    assert store.count_chunks() == len(left) and store.count_documents() == 600
    probe = store.chunks("d500", with_vectors=True)[3]
    (nearest,) = store.search(VectorQuery(probe.vector), 1)
    assert (nearest.doc_id, nearest.chunk) == ("d500", 3)
    store.upsert_chunks([point("d0", 0, unit(1))])  # still writable after compaction
    assert [c.chunk for c in store.chunks("d0")] == [0]


def test_edge_store_vacuums_deleted_points_and_survives_reopen(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "q", "chunks", DIM)
    segments = tmp_path / "q" / "chunks" / "segments"
    left = fill_then_delete_most(store)
    assert store.compact() is True  # 60% deleted: the segment is rewritten without them
    assert len(list(segments.iterdir())) == 1  # only the rewritten segment: the replaced one is gone from disk
    halved = sorted({d for d, _ in left})[::2]  # half of the rest deleted: vacuumed again
    for d in halved:
        store.delete_chunks(d)
    left = {(d, c) for d, c in left if d not in halved}
    assert store.compact() is True
    assert len(list(segments.iterdir())) == 1
    assert store.compact() is False  # nothing left to do
    store.close()
    reopened = EdgeVectorStore(tmp_path / "q", "chunks", DIM)
    assert {(c.doc_id, c.chunk) for c in reopened.all_chunks()} == left
    reopened.close()


def test_point_ids_are_deterministic() -> None:
    assert chunk_point_id("doc", 0) == chunk_point_id("doc", 0)
    assert len({chunk_point_id("doc", 0), chunk_point_id("doc", 1), chunk_point_id("doc2", 0)}) == 3


def test_edge_store_reopens_with_its_data(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "q", "chunks", DIM)
    store.upsert_chunks([point("a", 0, unit(1))])
    store.put_documents([DocumentState("a", 1, False, "h", 1)])
    store.close()
    reopened = EdgeVectorStore(tmp_path / "q", "chunks", DIM)
    assert reopened.count_chunks() == 1 and reopened.get_documents(["a"])["a"].version == 1
    reopened.close()


BM25 = Bm25Encoder()


def lexical(doc_id: str, chunk: int, text: str, vector: np.ndarray, version: int = 1,
            source: str | None = None) -> ChunkPoint:
    """A chunk with both vectors, as the indexer writes it (one upsert)."""
    return ChunkPoint(doc_id, chunk, text, version, f"h{version}", "v1", vector, source, None,
                      BM25.embed_documents([text])[0])


@pytest.fixture(params=["qdrant-edge", "qdrant-client", "fault-injection-off"])
def hybrid_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """The backends whose new collections hold dense and sparse vectors (the in-memory double answers dense only)."""
    backend = open_backend(request.param, tmp_path)
    yield backend
    backend.close()


def sparse(text: str) -> VectorQuery:
    return VectorQuery(sparse=BM25.embed_query(text), mode="sparse")


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.doc_id for h in hits]


def test_sparse_ranks_by_bm25_and_hybrid_fuses_both_rankings(hybrid_store: VectorStore) -> None:
    assert hybrid_store.modes == {"dense", "sparse", "hybrid"}
    hybrid_store.upsert_chunks([lexical("kettle", 0, "the kettle boils water for green tea", unit(1, 0)),
                                lexical("part", 0, "spare part code KE-7468 for the lantern", unit(0, 1)),
                                lexical("otter", 0, "otters swim in the river at dawn", unit(0.6, 0.8))])
    assert ids(hybrid_store.search(sparse("KE-7468"), 3)) == ["part"]  # only the exact term
    assert ids(hybrid_store.search(sparse("green tea kettle"), 3)) == ["kettle"]
    assert ids(hybrid_store.search(VectorQuery(unit(1, 0.05)), 3))[0] == "kettle"
    for fusion in ("rrf", "dbsf"):
        fused = hybrid_store.search(VectorQuery(unit(1, 0.05), BM25.embed_query("lantern KE-7468"), "hybrid",
                                                fusion), 2)  # type: ignore[arg-type]
        assert set(ids(fused)) == {"kettle", "part"}, fusion  # the best of each ranking, fused
    assert hybrid_store.search(sparse("zyxwvut"), 3) == []  # no matching term: nothing, not an error


def test_filters_apply_to_every_mode(hybrid_store: VectorStore) -> None:
    hybrid_store.upsert_chunks([lexical("a", 0, "tea kettle", unit(1, 0), source="kitchen"),
                                lexical("b", 0, "tea kettle spare", unit(1, 0.1), source="shop")])
    for query in (VectorQuery(unit(1, 0)), sparse("tea kettle"),
                  VectorQuery(unit(1, 0), BM25.embed_query("tea kettle"), "hybrid")):
        assert ids(hybrid_store.search(query, 5, {"source": "shop"})) == ["b"], query.mode


def test_access_applies_to_every_mode(hybrid_store: VectorStore) -> None:
    hybrid_store.upsert_chunks([lexical("a", 0, "tea kettle", unit(1, 0)),
                                replace(lexical("b", 0, "tea kettle spare", unit(1, 0.1)), acl=["group:shop"])])
    for query in (VectorQuery(unit(1, 0)), sparse("tea kettle spare"),
                  VectorQuery(unit(1, 0), BM25.embed_query("tea kettle spare"), "hybrid"),
                  VectorQuery(unit(1, 0), BM25.embed_query("tea kettle spare"), "hybrid", "dbsf")):
        assert ids(hybrid_store.search(query, 5)) == ["a"], query.mode
        assert set(ids(hybrid_store.search(query, 5, None, Access.of(["group:shop"])))) == {"a", "b"}, query.mode
        assert ids(hybrid_store.search(query, 5, {"doc_id": "b"})) == [], query.mode


def test_updates_deletes_and_shrinks_keep_both_vectors_consistent(hybrid_store: VectorStore) -> None:
    hybrid_store.upsert_chunks([lexical("a", i, f"old alpha words part {i} token{i}", unit(1, i)) for i in range(3)])
    hybrid_store.upsert_chunks([lexical("a", 0, "new beta words", unit(0, 1), version=2)])  # same point id
    assert ids(hybrid_store.search(sparse("beta"), 5)) == ["a"]
    assert sorted(h.chunk for h in hybrid_store.search(sparse("alpha"), 5)) == [1, 2]  # chunk 0 lost its old terms
    hybrid_store.delete_chunks("a", from_chunk=2)  # a shorter document
    assert hybrid_store.search(sparse("token2"), 5) == [] and ids(hybrid_store.search(sparse("token1"), 5)) == ["a"]
    hybrid_store.delete_chunks("a")
    for word in ("beta", "alpha", "token1"):
        assert hybrid_store.search(sparse(word), 5) == []
    assert hybrid_store.search(VectorQuery(unit(0, 1), BM25.embed_query("beta"), "hybrid"), 5) == []


@pytest.mark.parametrize("backend", ["qdrant-edge", "qdrant-client", "in-memory-double"])
def test_a_dense_only_collection_answers_dense_and_refuses_the_other_modes(backend: str, tmp_path: Path) -> None:
    store = open_backend(backend, tmp_path, sparse=False)
    try:
        assert store.modes == {"dense"}
        store.upsert_chunks([lexical("a", 0, "tea kettle", unit(1, 0))])  # the sparse vector is not kept
        assert ids(store.search(VectorQuery(unit(1, 0)), 1)) == ["a"]
        with pytest.raises(UnsupportedSearchMode):
            store.search(sparse("tea"), 1)
    finally:
        store.close()


def test_an_edge_shard_keeps_its_layout_when_reopened(tmp_path: Path) -> None:
    hybrid = EdgeVectorStore(tmp_path / "q", "new", DIM)
    hybrid.upsert_chunks([lexical("a", 0, "tea kettle", unit(1, 0))])
    hybrid.close()
    older = EdgeVectorStore(tmp_path / "q", "old", DIM, sparse=False)  # as shards were made before sparse vectors
    older.upsert_chunks([point("b", 0, unit(1, 0))])
    older.close()
    hybrid, older = EdgeVectorStore(tmp_path / "q", "new", DIM), EdgeVectorStore(tmp_path / "q", "old", DIM)
    try:
        assert ids(hybrid.search(sparse("kettle"), 1)) == ["a"] and hybrid.modes == {"dense", "sparse", "hybrid"}
        assert older.modes == {"dense"} and ids(older.search(VectorQuery(unit(1, 0)), 1)) == ["b"]
    finally:
        hybrid.close()
        older.close()

