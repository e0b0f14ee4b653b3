"""Upserts to a Qdrant server fit its request limit: batches are split by estimated JSON bytes, a point that fits no
request (or that the server refuses alone with 413) fails its own record, never the store, and a 413 is never
retried as an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.api.points_api import jsonable_encoder
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from schemas import DeadLetter
from streams.devtools.harness import Harness
from streams.ml.serving import PairOpener, serving_pair
from streams.settings import Settings
from streams.state.errors import PointTooLarge, RequestTooLarge, StoreError
from streams.state.hashing_encoder import HashingEncoder
from streams.state.server_store import REQUEST_OVERHEAD_BYTES, ServerVectorStore, point_json_bytes
from streams.state.sparse import Sparse
from streams.state.store import ChunkPoint, DocumentState
from streams.store_threads import StoreThreads

DIM = 64
LIMIT = 64 * 1024


@dataclass(frozen=True)
class UpsertRequest:
    collection: str
    doc_ids: tuple[str, ...]
    body_bytes: int  # of the JSON body qdrant-client's REST API would send
    refused: bool


class RecordingClient(QdrantClient):
    """qdrant-client's `:memory:` mode that records every upsert request, and answers 413 to bodies over
    `refuse_over` bytes (a server's or a proxy's limit) or raises `fail_with` for every upsert."""

    def __init__(self, refuse_over: int | None = None, fail_with: Exception | None = None) -> None:
        super().__init__(location=":memory:")
        self.refuse_over = refuse_over
        self.fail_with = fail_with
        self.requests: list[UpsertRequest] = []

    def upsert(self, collection_name: str, points: Any, **kwargs: Any) -> qm.UpdateResult:  # type: ignore[override]
        if self.fail_with is not None:
            raise self.fail_with
        body = jsonable_encoder(qm.PointsList(points=list(points)))
        refused = self.refuse_over is not None and len(body.encode()) > self.refuse_over
        self.requests.append(UpsertRequest(collection_name, tuple(str(p.payload["doc_id"]) for p in points),
                                           len(body.encode()), refused))
        if refused:
            raise too_large_response()
        return super().upsert(collection_name, points, **kwargs)

    def upserts(self, collection: str) -> list[UpsertRequest]:
        return [r for r in self.requests if r.collection == collection]


def too_large_response() -> UnexpectedResponse:
    return UnexpectedResponse(413, "Payload Too Large", b"request body too large", httpx.Headers())


def store_on(client: QdrantClient, limit: int = LIMIT) -> ServerVectorStore:
    return ServerVectorStore(client, "chunks", DIM, request_max_bytes=limit)


def chunk(doc_id: str, number: int, text_chars: int = 2_000) -> ChunkPoint:
    rng = np.random.default_rng(number)
    vector = rng.standard_normal(DIM).astype(np.float32)
    return ChunkPoint(doc_id, number, ("word " * text_chars)[:text_chars], 1, "h", "v1",
                      vector / np.linalg.norm(vector),
                      sparse=Sparse(tuple(range(0, 400, 4)), tuple(float(v) for v in rng.random(100))))


def test_a_batch_is_split_into_requests_within_the_limit_and_all_of_it_is_written() -> None:
    client = RecordingClient()
    store = store_on(client)
    store.upsert_chunks([chunk(f"doc-{i // 10}", i % 10) for i in range(200)])
    requests = client.upserts("chunks")
    assert len(requests) > 5 and sum(len(r.doc_ids) for r in requests) == 200
    assert all(r.body_bytes <= LIMIT for r in requests), [r.body_bytes for r in requests]
    assert store.count_chunks() == 200


def test_the_estimate_bounds_the_body_the_client_sends() -> None:
    """Floats at their longest, escapes and multi-byte text in the payload: the estimate stays an upper bound."""
    text = 'quotes " \\ and \x01\x1f controls, \u4e2d\u6587 \U0001f600' * 50
    awkward = ChunkPoint("d\u00e9j\u00e0-\U0001f600", 7, text, 2**62, "h" * 64, "v1",
                         np.full(DIM, -1.2345678e-5, dtype=np.float32), "src \u00e9", "t\n",
                         Sparse(tuple(range(4_294_967_245, 4_294_967_295)), (-2.2250738585072014e-308,) * 50))
    store = store_on(QdrantClient(location=":memory:"))
    point = (awkward.point_id, np.asarray(awkward.vector).tolist(), awkward.sparse, awkward.payload())
    named = qm.PointStruct(id=point[0], payload=point[3], vector={
        "dense": point[1], "bm25": qm.SparseVector(indices=list(awkward.sparse.indices),  # type: ignore[union-attr]
                                                   values=list(awkward.sparse.values))})  # type: ignore[union-attr]
    sent = len(jsonable_encoder(qm.PointsList(points=[named])).encode())
    assert sent <= point_json_bytes(point) + REQUEST_OVERHEAD_BYTES
    store.upsert_chunks([awkward])
    assert store.chunks(awkward.doc_id)[0].text == awkward.text


def test_a_point_over_the_limit_raises_point_too_large_and_the_rest_is_written() -> None:
    client = RecordingClient()
    store = store_on(client)
    points = [chunk("small-a", 0), chunk("big", 0, text_chars=LIMIT), chunk("small-b", 0)]
    with pytest.raises(PointTooLarge) as raised:
        store.upsert_chunks(points)
    assert raised.value.doc_ids == ("big",) and not isinstance(raised.value, StoreError)
    assert "chunk 0 of document 'big'" in str(raised.value) and f"{LIMIT:,}-byte request limit" in str(raised.value)
    assert [len(store.chunks(d)) for d in ("small-a", "big", "small-b")] == [1, 0, 1]
    assert all(r.body_bytes <= LIMIT for r in client.requests)


def test_a_ledger_entry_over_the_limit_raises_point_too_large_and_the_others_are_written() -> None:
    store = store_on(RecordingClient())
    states = [DocumentState(doc_id, 1, deleted=False, text=text, chunks=1) for doc_id, text in
              (("fits", "short"), ("huge", "x" * LIMIT), ("fits-too", "short"))]
    with pytest.raises(PointTooLarge) as raised:
        store.put_documents(states)
    assert raised.value.doc_ids == ("huge",) and "ledger entry of document 'huge'" in str(raised.value)
    assert set(store.get_documents(["fits", "huge", "fits-too"])) == {"fits", "fits-too"}


def test_a_413_splits_the_request_and_a_point_refused_alone_is_too_large() -> None:
    """The server (or a proxy) accepts less than we estimate for: refused requests are halved until they pass."""
    server_limit = 16 * 1024
    client = RecordingClient(refuse_over=server_limit)
    store = store_on(client)
    points = [chunk(f"doc-{i}", 0) for i in range(40)] + [chunk("over-the-server", 0, text_chars=20_000)]
    with pytest.raises(PointTooLarge) as raised:
        store.upsert_chunks(points)
    assert raised.value.doc_ids == ("over-the-server",) and "HTTP 413" in str(raised.value)
    assert store.count_chunks() == 40 and store.chunks("over-the-server") == []
    accepted = [r for r in client.requests if not r.refused]
    assert accepted and all(r.body_bytes <= server_limit for r in accepted)
    assert sorted(d for r in accepted for d in r.doc_ids) == sorted(f"doc-{i}" for i in range(40))


@pytest.mark.parametrize(("failure", "expected"), [
    (too_large_response(), PointTooLarge),
    (UnexpectedResponse(503, "Service Unavailable", b"", httpx.Headers()), StoreError),
    (UnexpectedResponse(500, "Internal Server Error", b"", httpx.Headers()), StoreError),
    (ResponseHandlingException(httpx.ConnectError("connection refused")), StoreError),
    (ResponseHandlingException(httpx.ReadTimeout("timed out")), StoreError),
], ids=["413", "503", "500", "connection-refused", "timeout"])
def test_only_transient_failures_are_store_errors(failure: Exception, expected: type[Exception]) -> None:
    store = store_on(RecordingClient(fail_with=failure))
    with pytest.raises(expected) as raised:
        store.upsert_chunks([chunk("a", 0)])
    assert isinstance(raised.value, StoreError) == (expected is StoreError)


def test_a_413_on_another_request_is_request_too_large() -> None:
    client = QdrantClient(location=":memory:")
    store = store_on(client)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise too_large_response()
    client.delete = refuse  # type: ignore[method-assign]
    with pytest.raises(RequestTooLarge) as raised:
        store.delete_chunks("a")
    assert not isinstance(raised.value, StoreError)


def test_the_store_threads_do_not_retry_a_413() -> None:
    """`StoreThreads` retries `StoreError` until it passes; a 413 surfaces at once, as a record's failure."""
    store = store_on(RecordingClient(fail_with=too_large_response()))
    threads = StoreThreads(retry_max_s=0.01)
    try:
        with pytest.raises(PointTooLarge):
            asyncio.run(asyncio.wait_for(threads.write(lambda: store.upsert_chunks([chunk("a", 0)]), "write"), 10))
    finally:
        threads.close()


def server_pairs(settings: Settings, store: ServerVectorStore) -> PairOpener:
    return lambda model: serving_pair(settings, model, HashingEncoder(model.version, DIM), store)


def doc(doc_id: str, version: int, text: str) -> dict[str, object]:
    return {"doc_id": doc_id, "version": version, "op": "upsert", "text": text}


def ingest(tmp_path: Path, store: ServerVectorStore, batches: Sequence[Sequence[dict[str, object]]],
           check: Callable[[Harness], None]) -> None:
    with Harness(tmp_path, opener=server_pairs(Settings(data_dir=tmp_path), store)).register("ingest") as harness:
        for batch in batches:
            harness.send("documents", batch)
        check(harness)


def test_an_oversized_document_is_dead_lettered_and_its_neighbours_are_indexed(tmp_path: Path) -> None:
    """Through the ingest agent: the document whose ledger entry fits no request becomes a dead letter with the
    reason; its batch-mates are indexed; it keeps the chunks of the version its ledger holds."""
    store = ServerVectorStore.connect(":memory:", "chunks", DIM, request_max_bytes=LIMIT)
    huge = " ".join(f"Sentence {i} of a very long document about offsets and commits." for i in range(1_500))
    assert len(huge) > LIMIT

    def check(harness: Harness) -> None:
        letters = harness.published("deadletter")
        assert [(letter.key, letter.exception) for letter in letters] == [("big", "PointTooLarge")]  # type: ignore[attr-defined]
        (letter,) = letters
        assert isinstance(letter, DeadLetter) and "ledger entry of document 'big'" in letter.errors[0].msg
        assert f"{LIMIT:,}-byte request limit" in letter.errors[0].msg
        ledger = store.get_documents(["before", "big", "after", "other"])
        assert {d: s.version for d, s in ledger.items()} == {"before": 1, "big": 1, "after": 1, "other": 1}
        assert [(c.text, c.version) for c in store.chunks("big")] == [("A short first version.", 1)]
        assert all(store.chunks(d) for d in ("before", "after", "other"))
        assert harness.shared.health.degraded() == []

    ingest(tmp_path, store, [[doc("big", 1, "A short first version.")],
                             [doc("before", 1, "Indexed before the big one."), doc("big", 2, huge),
                              doc("after", 1, "Indexed after the big one."), doc("other", 1, "Another neighbour.")]],
           check)
