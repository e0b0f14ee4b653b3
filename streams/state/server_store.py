"""`VectorStore` on qdrant-client: a Qdrant server (`QDRANT_URL`) or the client's in-process `:memory:` mode."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from streams.state.store import (
    ChunkPoint,
    DocumentState,
    ScalarValue,
    SearchHit,
    StoreError,
    check_filter,
    document_point_id,
)

T = TypeVar("T")
_SCROLL_PAGE = 1_000


def _match(key: str, value: ScalarValue) -> qm.FieldCondition:
    return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))  # type: ignore[arg-type]


class ServerVectorStore:
    """Collections `<collection>` (chunks) and `<collection>.documents` (ledger) on one Qdrant."""

    def __init__(self, client: QdrantClient, collection: str, dim: int) -> None:
        self._client = client
        self._dim = dim
        self.collection = collection
        self.ledger = f"{collection}.documents"
        self._call(self._ensure_collections)

    @classmethod
    def connect(cls, location: str, collection: str, dim: int, api_key: str | None = None) -> ServerVectorStore:
        """`location` is a server URL or `:memory:` (qdrant-client's in-process mode)."""
        if location == ":memory:":
            return cls(QdrantClient(location=":memory:"), collection, dim)
        return cls(QdrantClient(url=location, api_key=api_key, timeout=30), collection, dim)

    def _ensure_collections(self) -> None:
        wanted = {
            self.collection: qm.VectorParams(size=self._dim, distance=qm.Distance.COSINE),
            self.ledger: qm.VectorParams(size=1, distance=qm.Distance.DOT),
        }
        for name, params in wanted.items():
            if self._client.collection_exists(name):
                info = self._client.get_collection(name)
                size = info.config.params.vectors.size  # type: ignore[union-attr]
                if size != params.size:
                    raise StoreError(f"collection {name!r} has vectors of size {size}, expected {params.size}")
                continue
            self._client.create_collection(name, vectors_config=params)
        with warnings.catch_warnings():  # local mode ignores payload indexes and says so
            warnings.simplefilter("ignore", UserWarning)
            self._create_payload_indexes()

    def _create_payload_indexes(self) -> None:
        for field, schema in (("doc_id", qm.PayloadSchemaType.KEYWORD), ("chunk", qm.PayloadSchemaType.INTEGER),
                              ("source", qm.PayloadSchemaType.KEYWORD)):
            self._client.create_payload_index(self.collection, field, schema, wait=True)
        self._client.create_payload_index(self.ledger, "state", qm.PayloadSchemaType.KEYWORD, wait=True)

    @staticmethod
    def _call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StoreError:
            raise
        except Exception as exc:  # transport, timeouts, server errors
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    @property
    def dim(self) -> int:
        return self._dim

    def upsert_chunks(self, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        structs = [qm.PointStruct(id=p.point_id, vector=np.asarray(p.vector, dtype=np.float32).tolist(),
                                  payload=p.payload()) for p in points]
        self._call(lambda: self._client.upsert(self.collection, structs, wait=True))

    def delete_chunks(self, doc_id: str, from_chunk: int = 0) -> None:
        must: list[Any] = [_match("doc_id", doc_id)]
        if from_chunk:
            must.append(qm.FieldCondition(key="chunk", range=qm.Range(gte=from_chunk)))
        selector = qm.FilterSelector(filter=qm.Filter(must=must))
        self._call(lambda: self._client.delete(self.collection, selector, wait=True))

    def set_chunk_version(self, doc_id: str, version: int) -> None:
        self._call(lambda: self._client.set_payload(
            self.collection, {"version": version}, points=qm.Filter(must=[_match("doc_id", doc_id)]), wait=True))

    def search(self, vector: np.ndarray, limit: int,
               filter_: Mapping[str, ScalarValue] | None = None) -> list[SearchHit]:
        conditions = check_filter(filter_)
        response = self._call(lambda: self._client.query_points(
            self.collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            limit=limit,
            query_filter=qm.Filter(must=[_match(k, v) for k, v in conditions.items()]) if conditions else None,
            with_payload=True,
        ))
        return [
            SearchHit(p.payload["doc_id"], int(p.payload["chunk"]), float(p.score), p.payload["text"],
                      p.payload.get("source"))
            for p in response.points if p.payload
        ]

    def _scroll(self, collection: str, filter_: qm.Filter | None, with_vectors: bool = False) -> list[Any]:
        found: list[Any] = []
        offset = None
        while True:
            page, offset = self._call(lambda start=offset: self._client.scroll(
                collection, scroll_filter=filter_, limit=_SCROLL_PAGE, offset=start,
                with_payload=True, with_vectors=with_vectors))
            found.extend(page)
            if offset is None:
                return found

    def chunks(self, doc_id: str, with_vectors: bool = False) -> list[ChunkPoint]:
        records = self._scroll(self.collection, qm.Filter(must=[_match("doc_id", doc_id)]), with_vectors)
        return sorted((ChunkPoint.from_payload(r.payload or {}, r.vector if with_vectors else None)
                       for r in records), key=lambda c: c.chunk)

    def all_chunks(self, with_vectors: bool = False) -> list[ChunkPoint]:
        return [ChunkPoint.from_payload(r.payload or {}, r.vector if with_vectors else None)
                for r in self._scroll(self.collection, None, with_vectors)]

    def count_chunks(self) -> int:
        return self._call(lambda: self._client.count(self.collection, exact=True).count)

    def get_documents(self, doc_ids: Sequence[str]) -> dict[str, DocumentState]:
        if not doc_ids:
            return {}
        records = self._call(lambda: self._client.retrieve(
            self.ledger, [document_point_id(d) for d in doc_ids], with_payload=True, with_vectors=False))
        states = (DocumentState.from_payload(r.payload) for r in records if r.payload)
        return {state.doc_id: state for state in states}

    def put_documents(self, states: Sequence[DocumentState]) -> None:
        if not states:
            return
        stamp = time.time()
        structs = [qm.PointStruct(id=document_point_id(s.doc_id), vector=[1.0],
                                  payload={**s.payload(), "indexed_at": stamp}) for s in states]
        self._call(lambda: self._client.upsert(self.ledger, structs, wait=True))

    def count_documents(self, include_deleted: bool = False) -> int:
        filter_ = None if include_deleted else qm.Filter(must=[_match("state", "live")])
        return self._call(lambda: self._client.count(self.ledger, count_filter=filter_, exact=True).count)

    def all_documents(self) -> list[DocumentState]:
        return [DocumentState.from_payload(r.payload) for r in self._scroll(self.ledger, None) if r.payload]

    def compact(self) -> bool:
        return False  # the server's own optimizers vacuum in the background

    def close(self) -> None:
        self._client.close()
