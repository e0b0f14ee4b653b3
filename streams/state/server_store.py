"""`VectorStore` on qdrant-client: a Qdrant server (`QDRANT_URL`) or the client's in-process `:memory:` mode."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from streams.state.errors import StoreError
from streams.state.qdrant_store import SCROLL_PAGE, Condition, Match, QdrantStore, StoredPoint

T = TypeVar("T")


def _filter(conditions: Sequence[Condition]) -> qm.Filter | None:
    if not conditions:
        return None
    return qm.Filter(must=[
        qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.value)) if isinstance(c, Match)  # type: ignore[arg-type]
        else qm.FieldCondition(key=c.key, range=qm.Range(gte=c.value))
        for c in conditions])


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except StoreError:
        raise
    except Exception as exc:  # transport, timeouts, server errors
        raise StoreError(f"{type(exc).__name__}: {exc}") from exc


class ServerVectorStore(QdrantStore):
    """Collections `<collection>` (chunks) and `<collection>.documents` (ledger) on one Qdrant."""

    def __init__(self, client: QdrantClient, collection: str, dim: int) -> None:
        super().__init__(collection, dim)
        self._client = client
        _call(self._ensure_collections)

    @classmethod
    def connect(cls, location: str, collection: str, dim: int, api_key: str | None = None) -> ServerVectorStore:
        """`location` is a server URL or `:memory:` (qdrant-client's in-process mode)."""
        if location == ":memory:":
            return cls(QdrantClient(location=":memory:"), collection, dim)
        return cls(QdrantClient(url=location, api_key=api_key, timeout=30), collection, dim)

    def _ensure_collections(self) -> None:
        wanted = {
            self.collection: qm.VectorParams(size=self.dim, distance=qm.Distance.COSINE),
            self.ledger: qm.VectorParams(size=1, distance=qm.Distance.DOT),
        }
        for name, params in wanted.items():
            if self._client.collection_exists(name):
                size = self._client.get_collection(name).config.params.vectors.size  # type: ignore[union-attr]
                if size != params.size:
                    raise StoreError(f"collection {name!r} has vectors of size {size}, expected {params.size}")
                continue
            self._client.create_collection(name, vectors_config=params)
        with warnings.catch_warnings():  # local mode ignores payload indexes and says so
            warnings.simplefilter("ignore", UserWarning)
            for field, schema in (("doc_id", qm.PayloadSchemaType.KEYWORD), ("chunk", qm.PayloadSchemaType.INTEGER),
                                  ("source", qm.PayloadSchemaType.KEYWORD)):
                self._client.create_payload_index(self.collection, field, schema, wait=True)
            self._client.create_payload_index(self.ledger, "state", qm.PayloadSchemaType.KEYWORD, wait=True)

    def _upsert(self, collection: str, points: Sequence[tuple[str, list[float], dict[str, Any]]]) -> None:
        structs = [qm.PointStruct(id=point_id, vector=vector, payload=payload) for point_id, vector, payload in points]
        _call(lambda: self._client.upsert(collection, structs, wait=True))

    def _delete(self, collection: str, conditions: Sequence[Condition]) -> None:
        selector = qm.FilterSelector(filter=_filter(conditions))  # type: ignore[arg-type]
        _call(lambda: self._client.delete(collection, selector, wait=True))

    def _set_payload(self, collection: str, conditions: Sequence[Condition], payload: dict[str, Any]) -> None:
        _call(lambda: self._client.set_payload(collection, payload, points=_filter(conditions), wait=True))  # type: ignore[arg-type]

    def _nearest(self, vector: list[float], limit: int, conditions: Sequence[Condition]
                 ) -> list[tuple[float, Mapping[str, Any]]]:
        response = _call(lambda: self._client.query_points(self.collection, query=vector, limit=limit,
                                                           query_filter=_filter(conditions), with_payload=True))
        return [(p.score, p.payload or {}) for p in response.points]

    def _scroll_page(self, collection: str, conditions: Sequence[Condition], offset: Any, with_vectors: bool
                     ) -> tuple[list[StoredPoint], Any]:
        page, next_offset = _call(lambda: self._client.scroll(collection, scroll_filter=_filter(conditions),
                                                              limit=SCROLL_PAGE, offset=offset, with_payload=True,
                                                              with_vectors=with_vectors))
        return [(r.payload or {}, r.vector if with_vectors else None) for r in page], next_offset  # type: ignore[misc]

    def _retrieve(self, collection: str, ids: Sequence[str]) -> list[Mapping[str, Any]]:
        records = _call(lambda: self._client.retrieve(collection, list(ids), with_payload=True, with_vectors=False))
        return [r.payload or {} for r in records]

    def _count(self, collection: str, conditions: Sequence[Condition]) -> int:
        return _call(lambda: self._client.count(collection, count_filter=_filter(conditions), exact=True).count)

    def compact(self) -> bool:
        return False  # the server's own optimizers vacuum in the background

    def close(self) -> None:
        self._client.close()
