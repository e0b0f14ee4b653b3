"""`VectorStore` on qdrant-client: a Qdrant server (`QDRANT_URL`) or the client's in-process `:memory:` mode.

Upserts go out in requests of at most `request_max_bytes` of JSON (estimated from above, per point), well below the
server's limit (`service.max_request_size_mb`, 32 MB by default), so a batch of long documents never makes a request
the server refuses; a point that fits no request, alone, fails its own record (`PointTooLarge`), not the store.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pydantic_core
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from streams.state.errors import PointTooLarge, RequestTooLarge, StoreError
from streams.state.qdrant_store import (
    DENSE,
    SCROLL_PAGE,
    SPARSE,
    AtLeast,
    Between,
    Condition,
    DatesBetween,
    Match,
    MatchAny,
    Missing,
    PointToWrite,
    QdrantStore,
    StoredPoint,
)
from streams.state.sparse import Sparse
from streams.state.store import ALL_MODES, DENSE_ONLY, READERS, VectorQuery

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Default bound of one upsert request's body: a quarter of Qdrant's default 32 MB `service.max_request_size_mb`.
DEFAULT_REQUEST_MAX_BYTES = 8 * 1024 * 1024
#: The longest a finite float takes in JSON ("-0.000012345678901234567", "-2.2250738585072014e-308"), with a comma.
FLOAT_JSON_BYTES = 25
#: The longest an index of a sparse vector (uint32) takes in JSON, with a comma.
INDEX_JSON_BYTES = 11
#: A point's keys, brackets and id (a UUID), with room to spare.
POINT_OVERHEAD_BYTES = 256
#: A request's own envelope (`{"points":[...]}`), with room to spare.
REQUEST_OVERHEAD_BYTES = 1024
HTTP_PAYLOAD_TOO_LARGE = 413
#: Points named in a `PointTooLarge` message at most (the rest are counted).
NAMED_POINTS = 3


def _filter(conditions: Sequence[Condition]) -> qm.Filter | None:
    if not conditions:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    for c in conditions:
        if isinstance(c, Match):
            must.append(qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.value)))  # type: ignore[arg-type]
        elif isinstance(c, MatchAny):
            must.append(qm.FieldCondition(key=c.key, match=qm.MatchAny(any=list(c.values))))  # type: ignore[arg-type]
        elif isinstance(c, AtLeast):
            must.append(qm.FieldCondition(key=c.key, range=qm.Range(gte=c.value)))
        elif isinstance(c, Between):
            must.append(qm.FieldCondition(key=c.key, range=qm.Range(gt=c.gt, gte=c.gte, lt=c.lt, lte=c.lte)))
        elif isinstance(c, DatesBetween):
            must.append(qm.FieldCondition(key=c.key, range=qm.DatetimeRange(gt=c.gt, gte=c.gte, lt=c.lt,
                                                                            lte=c.lte)))
        elif isinstance(c, Missing):
            must.append(qm.IsEmptyCondition(is_empty=qm.PayloadField(key=c.key)))
        else:  # Exists
            must_not.append(qm.IsEmptyCondition(is_empty=qm.PayloadField(key=c.key)))
    return qm.Filter(must=must or None, must_not=must_not or None)


def _client_sparse(vector: Sparse) -> qm.SparseVector:
    return qm.SparseVector(indices=list(vector.indices), values=list(vector.values))


def point_json_bytes(point: PointToWrite) -> int:
    """An upper bound of the bytes `point` adds to an upsert request's body, which qdrant-client sends as compact
    UTF-8 JSON: every float of its vectors at the longest a float can take, its payload as serialized."""
    _, dense, sparse, payload = point
    size = POINT_OVERHEAD_BYTES + FLOAT_JSON_BYTES * len(dense) + len(pydantic_core.to_json(payload))
    if sparse is not None:
        size += INDEX_JSON_BYTES * len(sparse.indices) + FLOAT_JSON_BYTES * len(sparse.values)
    return size


def _call(fn: Callable[[], T]) -> T:
    """Run a client call; a 413 becomes `RequestTooLarge` (never retried), any other failure `StoreError`."""
    try:
        return fn()
    except StoreError:
        raise
    except UnexpectedResponse as exc:
        if exc.status_code == HTTP_PAYLOAD_TOO_LARGE:
            raise RequestTooLarge(f"the server refused the request as too large (HTTP {exc.status_code})") from exc
        raise StoreError(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # transport, timeouts, server errors
        raise StoreError(f"{type(exc).__name__}: {exc}") from exc


class ServerVectorStore(QdrantStore):
    """Collections `<collection>` (chunks) and `<collection>.documents` (ledger) on one Qdrant.

    A new chunk collection has a named dense vector and a named `bm25` sparse vector with the IDF modifier (unless
    `sparse` is False); an existing one is used as it is: with one unnamed vector (made before chunks carried
    sparse vectors), it answers dense searches only. An upsert request carries at most `request_max_bytes` of JSON.
    """

    def __init__(self, client: QdrantClient, collection: str, dim: int, sparse: bool = True,
                 request_max_bytes: int = DEFAULT_REQUEST_MAX_BYTES) -> None:
        if request_max_bytes <= REQUEST_OVERHEAD_BYTES + POINT_OVERHEAD_BYTES:
            raise ValueError(f"request_max_bytes={request_max_bytes} leaves no room for a point")
        super().__init__(collection, dim)
        self._client = client
        self.request_max_bytes = request_max_bytes
        self._warned_refused = False
        _call(lambda: self._ensure_collections(sparse))
        self.publish_unlabelled_chunks()

    @classmethod
    def connect(cls, location: str, collection: str, dim: int, api_key: str | None = None,
                sparse: bool = True, request_max_bytes: int = DEFAULT_REQUEST_MAX_BYTES) -> ServerVectorStore:
        """`location` is a server URL or `:memory:` (qdrant-client's in-process mode)."""
        if location == ":memory:":
            return cls(QdrantClient(location=":memory:"), collection, dim, sparse, request_max_bytes)
        return cls(QdrantClient(url=location, api_key=api_key, timeout=30), collection, dim, sparse,
                   request_max_bytes)

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
                                  ("source", qm.PayloadSchemaType.KEYWORD), (READERS, qm.PayloadSchemaType.KEYWORD)):
                self._client.create_payload_index(self.collection, field, schema, wait=True)
            self._client.create_payload_index(self.ledger, "state", qm.PayloadSchemaType.KEYWORD, wait=True)

    def index_metadata(self, types: Mapping[str, str]) -> None:
        """Payload indexes of the chunks' `metadata.<key>` for the keys declared (key -> type, as
        `Settings.metadata_index_types`; booleans are kept as keywords)."""
        schemas = {"integer": qm.PayloadSchemaType.INTEGER, "float": qm.PayloadSchemaType.FLOAT,
                   "keyword": qm.PayloadSchemaType.KEYWORD, "bool": qm.PayloadSchemaType.KEYWORD,
                   "datetime": qm.PayloadSchemaType.DATETIME}
        with warnings.catch_warnings():  # local mode ignores payload indexes and says so
            warnings.simplefilter("ignore", UserWarning)
            for key, kind in types.items():
                _call(lambda key=key, kind=kind: self._client.create_payload_index(  # type: ignore[misc]
                    self.collection, f"metadata.{key}", schemas[kind], wait=True))

    def _upsert(self, collection: str, points: Sequence[PointToWrite]) -> None:
        """Write `points` in requests of at most `request_max_bytes` (estimated), in order. A point that fits no
        request is left out; once every other point is stored, `PointTooLarge` names them all."""
        budget = self.request_max_bytes - REQUEST_OVERHEAD_BYTES
        too_large: list[tuple[PointToWrite, str]] = []
        request: list[PointToWrite] = []
        request_bytes = 0
        for point in points:
            size = point_json_bytes(point)
            if size > budget:
                too_large.append((point, f"~{size:,} bytes of JSON, over the {self.request_max_bytes:,}-byte "
                                         "request limit (GRISTMILL_QDRANT_REQUEST_MAX_BYTES)"))
                continue
            if request and request_bytes + size > budget:
                too_large += self._send(collection, request)
                request, request_bytes = [], 0
            request.append(point)
            request_bytes += size
        if request:
            too_large += self._send(collection, request)
        if too_large:
            raise self._too_large(collection, too_large)

    def _send(self, collection: str, points: Sequence[PointToWrite]) -> list[tuple[PointToWrite, str]]:
        """Upsert `points` in one request. One the server refuses as too large (HTTP 413: its limit, or a proxy's,
        is below ours) is split in halves until each part is stored; the single points it still refuses are
        returned, with why, instead of stored."""
        named = collection == self.collection and self.sparse
        structs = [qm.PointStruct(id=point_id, payload=payload, vector={
            DENSE: dense, **({SPARSE: _client_sparse(sparse)} if sparse else {})} if named else dense)
            for point_id, dense, sparse, payload in points]
        try:
            _call(lambda: self._client.upsert(collection, structs, wait=True))
        except RequestTooLarge:
            if len(points) == 1:
                return [(points[0], f"refused by the server as too large (HTTP 413; ~{point_json_bytes(points[0]):,} "
                                    "bytes of JSON)")]
            if not self._warned_refused:
                self._warned_refused = True
                log.warning("Qdrant refused an upsert of %d points as too large (HTTP 413): splitting requests; set "
                            "GRISTMILL_QDRANT_REQUEST_MAX_BYTES below the server's (or its proxy's) body limit",
                            len(points))
            half = len(points) // 2
            return self._send(collection, points[:half]) + self._send(collection, points[half:])
        return []

    def _too_large(self, collection: str, refused: Sequence[tuple[PointToWrite, str]]) -> PointTooLarge:
        def name(payload: Mapping[str, Any]) -> str:
            if collection == self.collection:
                return f"chunk {payload.get('chunk')} of document {payload.get('doc_id')!r}"
            return f"ledger entry of document {payload.get('doc_id')!r}"

        described = "; ".join(f"{name(point[3])}: {why}" for point, why in refused[:NAMED_POINTS])
        more = f"; and {len(refused) - NAMED_POINTS} more" if len(refused) > NAMED_POINTS else ""
        doc_ids = tuple(dict.fromkeys(str(point[3].get("doc_id")) for point, _ in refused))
        return PointTooLarge(f"{len(refused)} point(s) of {collection!r} fit no request to Qdrant: {described}{more}",
                             doc_ids)

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
