"""`VectorStore` on qdrant-edge: Qdrant's engine in-process, one shard per collection, WAL on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

from streams.state.errors import StoreError
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

T = TypeVar("T")
# Optimizing blocks the GIL; building HNSW takes seconds (7 s at 14k chunks here), vacuuming ~0.1 s. Exact search
# is ~11 ms at 100k chunks, so segments are never indexed: `optimize()` only vacuums and merges.
_VACUUM_ONLY = qe.EdgeOptimizersConfig(indexing_threshold=10**9)


def _filter(conditions: Sequence[Condition]) -> qe.Filter | None:
    if not conditions:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    for c in conditions:
        if isinstance(c, Match):
            must.append(qe.FieldCondition(key=c.key, match=qe.MatchValue(c.value)))  # type: ignore[arg-type]
        elif isinstance(c, MatchAny):
            must.append(qe.FieldCondition(key=c.key, match=qe.MatchAny(list(c.values))))  # type: ignore[arg-type]
        elif isinstance(c, AtLeast):
            must.append(qe.FieldCondition(key=c.key, range=qe.RangeFloat(gte=c.value)))
        elif isinstance(c, Between):
            must.append(qe.FieldCondition(key=c.key, range=qe.RangeFloat(gt=c.gt, gte=c.gte, lt=c.lt, lte=c.lte)))
        elif isinstance(c, DatesBetween):
            must.append(qe.FieldCondition(key=c.key, range=qe.RangeDateTime(gt=c.gt, gte=c.gte, lt=c.lt,
                                                                             lte=c.lte)))
        elif isinstance(c, Missing):
            must.append(qe.IsEmptyCondition(c.key))
        else:  # Exists
            must_not.append(qe.IsEmptyCondition(c.key))
    return qe.Filter(must=must or None, must_not=must_not or None)


def _open(path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
    if path.is_dir() and any(path.iterdir()):
        return qe.EdgeShard.load(str(path), config)
    return qe.EdgeShard.create(str(path), config)


def _chunk_config(dim: int, hybrid: bool) -> qe.EdgeConfig:
    """Named dense + BM25 vectors (IDF applied by Qdrant), or the one unnamed dense vector of older shards.
    Cold memory: mapped pages follow the live vectors."""
    dense = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, memory=qe.Memory.Cold)
    if not hybrid:
        return qe.EdgeConfig(vectors=dense, optimizers=_VACUUM_ONLY)
    return qe.EdgeConfig(vectors={DENSE: dense}, sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(
        modifier=qe.Modifier.Idf)}, optimizers=_VACUUM_ONLY)


def _edge_sparse(vector: Sparse) -> qe.SparseVector:
    return qe.SparseVector(list(vector.indices), list(vector.values))


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as exc:  # qdrant-edge raises bare Exception
        raise StoreError(str(exc)) from exc


class EdgeVectorStore(QdrantStore):
    """Two shards under `root`: `<collection>/` (chunks) and `<collection>.documents/` (ledger).

    A new chunk shard holds dense and sparse vectors (unless `sparse` is False); `<collection>.layout` beside it
    says so. A shard without that file was made before chunks carried sparse vectors: it is opened as it is and
    answers dense searches only. qdrant-edge allows one writer per shard, so one process owns `root`; writes are
    serialized here.
    """

    def __init__(self, root: Path, collection: str, dim: int, sparse: bool = True) -> None:
        super().__init__(collection, dim)
        self._write_lock = threading.Lock()
        path, marker = root / collection, root / f"{collection}.layout"
        existing = path.is_dir() and any(path.iterdir())
        hybrid = marker.is_file() if existing else sparse
        try:
            if hybrid and not existing:
                root.mkdir(parents=True, exist_ok=True)
                marker.write_text('{"vectors": {"dense": "cosine"}, "sparse_vectors": {"bm25": "idf"}}\n')
            chunks = _open(path, _chunk_config(dim, hybrid))
            docs = _open(root / self.ledger, qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=1, distance=qe.Distance.Dot), optimizers=_VACUUM_ONLY))
            for field, schema in (("doc_id", qe.PayloadSchemaType.Keyword), ("chunk", qe.PayloadSchemaType.Integer),
                                  ("source", qe.PayloadSchemaType.Keyword), (READERS, qe.PayloadSchemaType.Keyword)):
                chunks.update(qe.UpdateOperation.create_field_index(field, schema))
            docs.update(qe.UpdateOperation.create_field_index("state", qe.PayloadSchemaType.Keyword))
        except Exception as exc:  # qdrant-edge raises bare Exception
            raise StoreError(f"cannot open qdrant-edge shards under {root}: {exc}") from exc
        self._shards = {collection: chunks, self.ledger: docs}
        self._modes = ALL_MODES if hybrid else DENSE_ONLY
        if chunks.info().points_count and self._chunk_dim() not in (None, dim):
            raise StoreError(f"shard {root / collection} holds vectors of another dimension than {dim}")
        self.publish_unlabelled_chunks()

    def index_metadata(self, types: Mapping[str, str]) -> None:
        """Payload indexes of the chunks' `metadata.<key>` for the keys declared (key -> type, as
        `Settings.metadata_index_types`; booleans are kept as keywords)."""
        schemas = {"integer": qe.PayloadSchemaType.Integer, "float": qe.PayloadSchemaType.Float,
                   "keyword": qe.PayloadSchemaType.Keyword, "bool": qe.PayloadSchemaType.Keyword,
                   "datetime": qe.PayloadSchemaType.Datetime}
        with self._write_lock:
            for key, kind in types.items():
                _call(lambda key=key, kind=kind: self._shards[self.collection].update(  # type: ignore[misc]
                    qe.UpdateOperation.create_field_index(f"metadata.{key}", schemas[kind])))

    def _chunk_dim(self) -> int | None:
        records, _ = self._shards[self.collection].scroll(
            qe.ScrollRequest(limit=1, with_vector=True, with_payload=False))
        vector = self._dense(records[0].vector) if records else None
        return len(vector) if vector else None

    @staticmethod
    def _dense(vector: Any) -> Any:
        return vector.get(DENSE) if isinstance(vector, dict) else vector

    def _update(self, collection: str, operation: qe.UpdateOperation) -> None:
        shard = self._shards[collection]
        with self._write_lock:
            _call(lambda: shard.update(operation))

    def _upsert(self, collection: str, points: Sequence[PointToWrite]) -> None:
        named = collection == self.collection and self.sparse
        self._update(collection, qe.UpdateOperation.upsert_points([
            qe.Point(point_id, {DENSE: dense, **({SPARSE: _edge_sparse(sparse)} if sparse else {})} if named
                     else dense, payload)
            for point_id, dense, sparse, payload in points]))

    def _delete(self, collection: str, conditions: Sequence[Condition]) -> None:
        self._update(collection, qe.UpdateOperation.delete_points_by_filter(_filter(conditions)))

    def _set_payload(self, collection: str, conditions: Sequence[Condition], payload: dict[str, Any]) -> None:
        self._update(collection, qe.UpdateOperation.set_payload_by_filter(_filter(conditions), payload))

    def _query(self, query: VectorQuery, limit: int, conditions: Sequence[Condition]
               ) -> list[tuple[float, Mapping[str, Any]]]:
        filter_ = _filter(conditions)
        dense = sparse = None
        if query.mode in ("dense", "hybrid"):
            vector = np.asarray(query.dense, dtype=np.float32).tolist()
            dense = qe.Query.Nearest(vector, using=DENSE) if self.sparse else qe.Query.Nearest(vector)
        if query.mode in ("sparse", "hybrid") and query.sparse is not None:
            sparse = qe.Query.Nearest(_edge_sparse(query.sparse), using=SPARSE)
        if query.mode == "hybrid":
            fusion = qe.Fusion.Rrf(k=query.rrf_k) if query.fusion == "rrf" else qe.Fusion.Dbsf()
            request = qe.QueryRequest(limit=limit, query=fusion, filter=filter_, with_payload=True, with_vector=False,
                                      prefetches=[qe.Prefetch(limit=query.candidates, query=q, filter=filter_)
                                                  for q in (dense, sparse) if q is not None])
        else:
            request = qe.QueryRequest(limit=limit, query=dense if query.mode == "dense" else sparse, filter=filter_,
                                      with_payload=True, with_vector=False)
        if request.query is None:
            return []  # a sparse query without a term the model knows
        return [(p.score, p.payload or {}) for p in _call(lambda: self._shards[self.collection].query(request))]

    def _scroll_page(self, collection: str, conditions: Sequence[Condition], offset: Any, with_vectors: bool
                     ) -> tuple[list[StoredPoint], Any]:
        request = qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, filter=_filter(conditions), with_payload=True,
                                   with_vector=with_vectors)
        page, next_offset = _call(lambda: self._shards[collection].scroll(request))
        return [(r.payload or {}, self._dense(r.vector) if with_vectors else None) for r in page], next_offset

    def _retrieve(self, collection: str, ids: Sequence[str]) -> list[Mapping[str, Any]]:
        records = _call(lambda: self._shards[collection].retrieve(list(ids), with_payload=True, with_vector=False))
        return [r.payload or {} for r in records]

    def _count(self, collection: str, conditions: Sequence[Condition]) -> int:
        return _call(lambda: self._shards[collection].count(qe.CountRequest(exact=True, filter=_filter(conditions))))

    def compact(self) -> bool:
        """Vacuum both shards, then flush them: only a flush removes replaced segment files and lets the WAL
        be truncated (without it both the WAL and, after a vacuum, the disk and mapped memory keep growing)."""
        with self._write_lock:
            rewrote = False
            for shard in self._shards.values():
                rewrote = _call(shard.optimize) or rewrote
                _call(shard.flush)
            return rewrote

    def close(self) -> None:
        with self._write_lock:
            for shard in self._shards.values():
                try:
                    shard.flush()
                finally:
                    shard.close()
