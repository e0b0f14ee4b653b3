"""`VectorStore` on qdrant-client: a Qdrant server (`QDRANT_URL`) or the client's in-process `:memory:` mode."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from streams.state.errors import StoreError
from streams.state.qdrant_store import (
    DENSE,
    SCROLL_PAGE,
    SPARSE,
    Condition,
    Match,
    PointToWrite,
    QdrantStore,
    StoredPoint,
)
from streams.state.sparse import Sparse
from streams.state.store import ALL_MODES, DENSE_ONLY, VectorQuery

T = TypeVar("T")


def _filter(conditions: Sequence[Condition]) -> qm.Filter | None:
    if not conditions:
        return None
    return qm.Filter(must=[
        qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.value)) if isinstance(c, Match)  # type: ignore[arg-type]
        else qm.FieldCondition(key=c.key, range=qm.Range(gte=c.value))
        for c in conditions])


def _client_sparse(vector: Sparse) -> qm.SparseVector:
    return qm.SparseVector(indices=list(vector.indices), values=list(vector.values))


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except StoreError:
        raise
    except Exception as exc:  # transport, timeouts, server errors
        raise StoreError(f"{type(exc).__name__}: {exc}") from exc


class ServerVectorStore(QdrantStore):
    """Collections `<collection>` (chunks) and `<collection>.documents` (ledger) on one Qdrant.

    A new chunk collection has a named dense vector and a named `bm25` sparse vector with the IDF modifier (unless
    `sparse` is False); an existing one is used as it is: with one unnamed vector (made before chunks carried
    sparse vectors), it answers dense searches only.
    """

    def __init__(self, client: QdrantClient, collection: str, dim: int, sparse: bool = True) -> None:
        super().__init__(collection, dim)
        self._client = client
        _call(lambda: self._ensure_collections(sparse))

    @classmethod
    def connect(cls, location: str, collection: str, dim: int, api_key: str | None = None,
                sparse: bool = True) -> ServerVectorStore:
        """`location` is a server URL or `:memory:` (qdrant-client's in-process mode)."""
        if location == ":memory:":
            return cls(QdrantClient(location=":memory:"), collection, dim, sparse)
        return cls(QdrantClient(url=location, api_key=api_key, timeout=30), collection, dim, sparse)

    def _ensure_collections(self, sparse: bool) -> None:
        dense = qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE)
        if self._client.collection_exists(self.collection):
            vectors = self._client.get_collection(self.collection).config.params.vectors
            named = isinstance(vectors, dict)
            size = vectors[DENSE].size if named else vectors.size  # type: ignore[index, union-attr]
            if size != self.dim:
                raise StoreError(f"collection {self.collection!r} has vectors of size {size}, expected {self.dim}")
        else:
            named = sparse
            if named:
                self._client.create_collection(self.collection, vectors_config={DENSE: dense},
                                               sparse_vectors_config={SPARSE: qm.SparseVectorParams(
                                                   modifier=qm.Modifier.IDF)})
            else:
                self._client.create_collection(self.collection, vectors_config=dense)
        self._modes = ALL_MODES if named else DENSE_ONLY
        if not self._client.collection_exists(self.ledger):
            self._client.create_collection(self.ledger, vectors_config=qm.VectorParams(size=1,
                                                                                      distance=qm.Distance.DOT))
        with warnings.catch_warnings():  # local mode ignores payload indexes and says so
            warnings.simplefilter("ignore", UserWarning)
            for field, schema in (("doc_id", qm.PayloadSchemaType.KEYWORD), ("chunk", qm.PayloadSchemaType.INTEGER),
                                  ("source", qm.PayloadSchemaType.KEYWORD)):
                self._client.create_payload_index(self.collection, field, schema, wait=True)
            self._client.create_payload_index(self.ledger, "state", qm.PayloadSchemaType.KEYWORD, wait=True)

    def _upsert(self, collection: str, points: Sequence[PointToWrite]) -> None:
        named = collection == self.collection and self.sparse
        structs = [qm.PointStruct(id=point_id, payload=payload, vector={
            DENSE: dense, **({SPARSE: _client_sparse(sparse)} if sparse else {})} if named else dense)
            for point_id, dense, sparse, payload in points]
        _call(lambda: self._client.upsert(collection, structs, wait=True))

    def _delete(self, collection: str, conditions: Sequence[Condition]) -> None:
        selector = qm.FilterSelector(filter=_filter(conditions))  # type: ignore[arg-type]
        _call(lambda: self._client.delete(collection, selector, wait=True))

    def _set_payload(self, collection: str, conditions: Sequence[Condition], payload: dict[str, Any]) -> None:
        _call(lambda: self._client.set_payload(collection, payload, points=_filter(conditions), wait=True))  # type: ignore[arg-type]

    def _query(self, query: VectorQuery, limit: int, conditions: Sequence[Condition]
               ) -> list[tuple[float, Mapping[str, Any]]]:
        filter_ = _filter(conditions)
        using = DENSE if self.sparse else None
        dense = np.asarray(query.dense, dtype=np.float32).tolist() if query.dense is not None else None
        sparse = _client_sparse(query.sparse) if query.sparse is not None and query.sparse.indices else None
        if query.mode == "hybrid":
            fusion = (qm.RrfQuery(rrf=qm.Rrf(k=query.rrf_k)) if query.fusion == "rrf"
                      else qm.FusionQuery(fusion=qm.Fusion.DBSF))
            prefetch = [qm.Prefetch(query=vector, using=name, limit=query.candidates, filter=filter_)
                        for vector, name in ((dense, using), (sparse, SPARSE)) if vector is not None]
            call = lambda: self._client.query_points(self.collection, prefetch=prefetch, query=fusion,  # noqa: E731
                                                     query_filter=filter_, limit=limit, with_payload=True)
        elif query.mode == "sparse":
            if sparse is None:
                return []  # a query without a term the model knows
            call = lambda: self._client.query_points(self.collection, query=sparse, using=SPARSE,  # noqa: E731
                                                     query_filter=filter_, limit=limit, with_payload=True)
        else:
            call = lambda: self._client.query_points(self.collection, query=dense, using=using,  # noqa: E731
                                                     query_filter=filter_, limit=limit, with_payload=True)
        return [(p.score, p.payload or {}) for p in _call(call).points]

    def _scroll_page(self, collection: str, conditions: Sequence[Condition], offset: Any, with_vectors: bool
                     ) -> tuple[list[StoredPoint], Any]:
        page, next_offset = _call(lambda: self._client.scroll(collection, scroll_filter=_filter(conditions),
                                                              limit=SCROLL_PAGE, offset=offset, with_payload=True,
                                                              with_vectors=with_vectors))
        return [(r.payload or {}, (r.vector.get(DENSE) if isinstance(r.vector, dict) else r.vector)
                 if with_vectors else None) for r in page], next_offset  # type: ignore[misc]

    def _retrieve(self, collection: str, ids: Sequence[str]) -> list[Mapping[str, Any]]:
        records = _call(lambda: self._client.retrieve(collection, list(ids), with_payload=True, with_vectors=False))
        return [r.payload or {} for r in records]

    def _count(self, collection: str, conditions: Sequence[Condition]) -> int:
        return _call(lambda: self._client.count(collection, count_filter=_filter(conditions), exact=True).count)

    def compact(self) -> bool:
        return False  # the server's own optimizers vacuum in the background

    def close(self) -> None:
        self._client.close()
