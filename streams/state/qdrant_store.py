"""What the two Qdrant `VectorStore` backends share: payload mapping, paging, ledger reads and writes.

A store keeps two collections: `<collection>` (one point per chunk, with a named `dense` vector and a named
`bm25` sparse vector whose IDF Qdrant applies) and `<collection>.documents` (the ledger, one point per document
with a 1-d dummy vector). A chunk collection made before chunks carried sparse vectors has one unnamed dense
vector: it keeps answering dense searches (`modes`) until a rollout builds a new one. The backends (qdrant-edge
in-process, qdrant-client against a server or its `:memory:` mode) only supply the primitive calls of their client,
on neutral filter conditions; dense, sparse and hybrid queries are all answered inside Qdrant.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas import ScalarValue, validate_filter
from schemas.records import METADATA_PREFIX
from streams.state.errors import UnsupportedSearchMode
from streams.state.sparse import Sparse
from streams.state.store import (
    DENSE_ONLY,
    KEEP_ACL,
    PUBLIC,
    PUBLIC_READER,
    READERS,
    Access,
    ChunkPoint,
    DocumentState,
    KeepAcl,
    SearchHit,
    VectorQuery,
    document_point_id,
    filterable_metadata,
    readers_of,
)

SCROLL_PAGE = 1_000
DENSE, SPARSE = "dense", "bm25"  # the names of a chunk's vectors


@dataclass(frozen=True, slots=True)
class Match:
    """Payload field `key` equals `value`."""

    key: str
    value: ScalarValue


@dataclass(frozen=True, slots=True)
class AtLeast:
    """Payload field `key` is at least `value`."""

    key: str
    value: float


@dataclass(frozen=True, slots=True)
class MatchAny:
    """Payload field `key` equals one of `values`."""

    key: str
    values: tuple[ScalarValue, ...]


@dataclass(frozen=True, slots=True)
class Between:
    """Payload field `key` is a number within the bounds given (None: unbounded)."""

    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True, slots=True)
class DatesBetween:
    """Payload field `key` is a date or time (RFC 3339) within the bounds given (ISO-8601 with an offset)."""

    key: str
    gt: str | None = None
    gte: str | None = None
    lt: str | None = None
    lte: str | None = None


@dataclass(frozen=True, slots=True)
class Exists:
    """Payload field `key` is there, with a value other than null or an empty list."""

    key: str


@dataclass(frozen=True, slots=True)
class Missing:
    """Payload field `key` is absent, null or an empty list."""

    key: str


Condition = Match | AtLeast | MatchAny | Between | DatesBetween | Exists | Missing


def access_conditions(access: Access) -> list[Condition]:
    """What restricts a search to the chunks `access` may read: their `readers` share a value with the caller's
    (public chunks carry `PUBLIC_READER`, which every caller's readers hold)."""
    readers = access.readers()
    return [] if readers is None else [MatchAny(READERS, readers)]


def filter_conditions(filter_: Mapping[str, object] | None) -> list[Condition]:
    """A query's filter (checked here: `InvalidFilter`) as the backends' neutral conditions, all to hold."""
    conditions: list[Condition] = []
    for key, value in validate_filter(filter_).items():
        if isinstance(value, float):  # Qdrant matches keywords, integers and booleans: a number is a range
            conditions.append(Between(key, gte=value, lte=value))
        elif isinstance(value, bool) and key.startswith(METADATA_PREFIX):  # as chunks carry booleans
            conditions.append(Match(key, "true" if value else "false"))
        elif isinstance(value, dict) and "any" in value and key.startswith(METADATA_PREFIX):
            conditions.append(MatchAny(key, tuple(("true" if v else "false") if isinstance(v, bool) else v
                                                  for v in value["any"])))  # type: ignore[union-attr]
        elif not isinstance(value, dict):
            conditions.append(Match(key, value))
        elif "any" in value:
            conditions.append(MatchAny(key, tuple(value["any"])))  # type: ignore[arg-type]
        elif "exists" in value:
            conditions.append(Exists(key))
        elif any(isinstance(bound, str) for bound in value.values()):
            conditions.append(DatesBetween(key, **value))  # type: ignore[arg-type]
        else:
            conditions.append(Between(key, **value))  # type: ignore[arg-type]
    return conditions
#: One point as read back: its payload and, when asked for, its dense vector.
StoredPoint = tuple[Mapping[str, Any], Sequence[float] | None]
#: One point to write: id, dense vector, sparse vector (chunks of a hybrid collection only), payload.
PointToWrite = tuple[str, list[float], Sparse | None, dict[str, Any]]


class QdrantStore(ABC):
    """The `VectorStore` algorithms over a Qdrant client's primitives (see the subclasses)."""

    def __init__(self, collection: str, dim: int) -> None:
        self.collection = collection
        self.ledger = f"{collection}.documents"
        self._dim = dim
        self._modes: frozenset[str] = DENSE_ONLY  # subclasses set what their chunk collection's layout allows

    # -- primitives of a client --------------------------------------------------------------------------------
    @abstractmethod
    def _upsert(self, collection: str, points: Sequence[PointToWrite]) -> None: ...

    @abstractmethod
    def _delete(self, collection: str, conditions: Sequence[Condition]) -> None: ...

    @abstractmethod
    def _set_payload(self, collection: str, conditions: Sequence[Condition], payload: dict[str, Any]) -> None: ...

    @abstractmethod
    def _query(self, query: VectorQuery, limit: int, conditions: Sequence[Condition]
               ) -> list[tuple[float, Mapping[str, Any]]]:
        """(score, payload) of the best chunks for a query whose mode this collection answers."""

    @abstractmethod
    def _scroll_page(self, collection: str, conditions: Sequence[Condition], offset: Any, with_vectors: bool
                     ) -> tuple[list[StoredPoint], Any]: ...

    @abstractmethod
    def _retrieve(self, collection: str, ids: Sequence[str]) -> list[Mapping[str, Any]]: ...

    @abstractmethod
    def _count(self, collection: str, conditions: Sequence[Condition]) -> int: ...

    # -- the VectorStore protocol ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def modes(self) -> frozenset[str]:
        return self._modes

    @property
    def sparse(self) -> bool:
        """Whether chunks carry sparse vectors here."""
        return self._modes != DENSE_ONLY

    def upsert_chunks(self, points: Sequence[ChunkPoint]) -> None:
        if points:
            self._upsert(self.collection, [(p.point_id, np.asarray(p.vector, dtype=np.float32).tolist(),
                                            p.sparse if self.sparse else None, p.payload()) for p in points])

    def delete_chunks(self, doc_id: str, from_chunk: int = 0) -> None:
        conditions: list[Condition] = [Match("doc_id", doc_id)]
        if from_chunk:
            conditions.append(AtLeast("chunk", float(from_chunk)))
        self._delete(self.collection, conditions)

    def set_chunk_version(self, doc_id: str, version: int, metadata: Mapping[str, ScalarValue] | None = None,
                          acl: Sequence[str] | KeepAcl | None = KEEP_ACL) -> None:
        stamped: dict[str, Any] = {"version": version}
        if metadata is not None:
            stamped["metadata"] = filterable_metadata(metadata)
        if not isinstance(acl, KeepAcl):
            stamped[READERS] = readers_of(acl)
        self._set_payload(self.collection, [Match("doc_id", doc_id)], stamped)

    def publish_unlabelled_chunks(self) -> None:
        """Chunks written before documents had acls carry no `readers`: they are public, and say so from now on
        (a search only returns chunks whose `readers` it shares)."""
        self._set_payload(self.collection, [Missing(READERS)], {READERS: [PUBLIC_READER]})

    def search(self, query: VectorQuery, limit: int, filter_: Mapping[str, object] | None = None,
               access: Access = PUBLIC) -> list[SearchHit]:
        conditions = filter_conditions(filter_) + access_conditions(access)
        if query.mode not in self.modes:
            raise UnsupportedSearchMode(f"collection {self.collection!r} answers {sorted(self.modes)} searches, not "
                             f"{query.mode!r} (it predates sparse vectors: `gristmill reindex` rebuilds it)")
        found = self._query(query, limit, conditions)
        return [SearchHit(p["doc_id"], int(p["chunk"]), float(score), p["text"], p.get("source"))
                for score, p in found if p]

    def chunks(self, doc_id: str, with_vectors: bool = False) -> list[ChunkPoint]:
        points = self._scroll(self.collection, [Match("doc_id", doc_id)], with_vectors)
        return sorted((ChunkPoint.from_payload(payload, vector) for payload, vector in points), key=lambda c: c.chunk)

    def all_chunks(self, with_vectors: bool = False) -> list[ChunkPoint]:
        return [ChunkPoint.from_payload(payload, vector) for payload, vector in
                self._scroll(self.collection, [], with_vectors)]

    def count_chunks(self) -> int:
        return self._count(self.collection, [])

    def get_documents(self, doc_ids: Sequence[str]) -> dict[str, DocumentState]:
        if not doc_ids:
            return {}
        states = (DocumentState.from_payload(p) for p in self._retrieve(self.ledger, [document_point_id(d)
                                                                                      for d in doc_ids]) if p)
        return {state.doc_id: state for state in states}

    def put_documents(self, states: Sequence[DocumentState]) -> None:
        if states:
            stamp = time.time()
            self._upsert(self.ledger, [(document_point_id(s.doc_id), [1.0], None, {**s.payload(), "indexed_at": stamp})
                                       for s in states])

    def count_documents(self, include_deleted: bool = False) -> int:
        return self._count(self.ledger, [] if include_deleted else [Match("state", "live")])

    def all_documents(self) -> list[DocumentState]:
        return [DocumentState.from_payload(payload) for payload, _ in self._scroll(self.ledger, [], False) if payload]

    def _scroll(self, collection: str, conditions: Sequence[Condition], with_vectors: bool) -> list[StoredPoint]:
        found: list[StoredPoint] = []
        offset = None
        while True:
            page, offset = self._scroll_page(collection, conditions, offset, with_vectors)
            found.extend(page)
            if offset is None:
                return found
