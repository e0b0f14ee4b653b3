"""`VectorStore` on qdrant-edge: Qdrant's engine in-process, one shard per collection, WAL on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

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
# Optimizing blocks the GIL; building HNSW takes seconds (7 s at 14k chunks here), vacuuming ~0.1 s. Exact search
# is ~11 ms at 100k chunks, so segments are never indexed: `optimize()` only vacuums and merges.
_VACUUM_ONLY = qe.EdgeOptimizersConfig(indexing_threshold=10**9)


def _match(key: str, value: ScalarValue) -> qe.FieldCondition:
    return qe.FieldCondition(key=key, match=qe.MatchValue(value))  # type: ignore[arg-type]


def _open(path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
    if path.is_dir() and any(path.iterdir()):
        return qe.EdgeShard.load(str(path), config)
    return qe.EdgeShard.create(str(path), config)


class EdgeVectorStore:
    """Two shards under `root`: `<collection>/` (chunks) and `<collection>.documents/` (ledger).

    qdrant-edge allows one writer per shard, so one process owns `root`; writes are serialized here.
    """

    def __init__(self, root: Path, collection: str, dim: int) -> None:
        self._dim = dim
        self._write_lock = threading.Lock()
        try:
            self._chunks = _open(root / collection, qe.EdgeConfig(  # Cold: mapped pages follow the live vectors
                vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, memory=qe.Memory.Cold),
                optimizers=_VACUUM_ONLY))
            self._docs = _open(root / f"{collection}.documents", qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=1, distance=qe.Distance.Dot), optimizers=_VACUUM_ONLY))
            self._chunks.update(qe.UpdateOperation.create_field_index("doc_id", qe.PayloadSchemaType.Keyword))
            self._chunks.update(qe.UpdateOperation.create_field_index("chunk", qe.PayloadSchemaType.Integer))
            self._chunks.update(qe.UpdateOperation.create_field_index("source", qe.PayloadSchemaType.Keyword))
            self._docs.update(qe.UpdateOperation.create_field_index("state", qe.PayloadSchemaType.Keyword))
        except Exception as exc:  # qdrant-edge raises bare Exception
            raise StoreError(f"cannot open qdrant-edge shards under {root}: {exc}") from exc
        stored = self._chunks.info()
        if stored.points_count and self._chunk_dim() not in (None, dim):
            raise StoreError(f"shard {root / collection} holds vectors of another dimension than {dim}")

    def _chunk_dim(self) -> int | None:
        records, _ = self._chunks.scroll(qe.ScrollRequest(limit=1, with_vector=True, with_payload=False))
        return len(records[0].vector) if records and records[0].vector else None  # type: ignore[arg-type]

    @property
    def dim(self) -> int:
        return self._dim

    def _write(self, shard: qe.EdgeShard, operation: qe.UpdateOperation) -> None:
        with self._write_lock:
            self._call(lambda: shard.update(operation))

    @staticmethod
    def _call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def upsert_chunks(self, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        self._write(self._chunks, qe.UpdateOperation.upsert_points([
            qe.Point(p.point_id, np.asarray(p.vector, dtype=np.float32).tolist(), p.payload())
            for p in points
        ]))

    def delete_chunks(self, doc_id: str, from_chunk: int = 0) -> None:
        must: list[Any] = [_match("doc_id", doc_id)]
        if from_chunk:
            must.append(qe.FieldCondition(key="chunk", range=qe.RangeFloat(gte=float(from_chunk))))
        self._write(self._chunks, qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=must)))

    def set_chunk_version(self, doc_id: str, version: int) -> None:
        self._write(self._chunks, qe.UpdateOperation.set_payload_by_filter(
            qe.Filter(must=[_match("doc_id", doc_id)]), {"version": version}))

    def search(self, vector: np.ndarray, limit: int,
               filter_: Mapping[str, ScalarValue] | None = None) -> list[SearchHit]:
        conditions = check_filter(filter_)
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()),
            filter=qe.Filter(must=[_match(k, v) for k, v in conditions.items()]) if conditions else None,
            with_payload=True,
            with_vector=False,
        )
        found = self._call(lambda: self._chunks.query(request))
        return [
            SearchHit(p.payload["doc_id"], int(p.payload["chunk"]), float(p.score), p.payload["text"],
                      p.payload.get("source"))
            for p in found if p.payload
        ]

    def chunks(self, doc_id: str, with_vectors: bool = False) -> list[ChunkPoint]:
        records = self._scroll(self._chunks, qe.Filter(must=[_match("doc_id", doc_id)]), with_vectors)
        return sorted((ChunkPoint.from_payload(r.payload or {}, r.vector if with_vectors else None)  # type: ignore[arg-type]
                       for r in records), key=lambda c: c.chunk)

    def _scroll(self, shard: qe.EdgeShard, filter_: qe.Filter | None, with_vectors: bool = False) -> list[Any]:
        found: list[Any] = []
        offset = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=filter_, with_payload=True,
                                       with_vector=with_vectors)
            page, offset = self._call(lambda request=request: shard.scroll(request))
            found.extend(page)
            if offset is None:
                return found

    def count_chunks(self) -> int:
        return self._call(lambda: self._chunks.count(qe.CountRequest(exact=True)))

    def get_documents(self, doc_ids: Sequence[str]) -> dict[str, DocumentState]:
        if not doc_ids:
            return {}
        records = self._call(lambda: self._docs.retrieve(
            [document_point_id(d) for d in doc_ids], with_payload=True, with_vector=False))
        states = (DocumentState.from_payload(r.payload) for r in records if r.payload)
        return {state.doc_id: state for state in states}

    def put_documents(self, states: Sequence[DocumentState]) -> None:
        if not states:
            return
        stamp = time.time()
        self._write(self._docs, qe.UpdateOperation.upsert_points([
            qe.Point(document_point_id(s.doc_id), [1.0], {**s.payload(), "indexed_at": stamp})
            for s in states
        ]))

    def count_documents(self, include_deleted: bool = False) -> int:
        filter_ = None if include_deleted else qe.Filter(must=[_match("state", "live")])
        return self._call(lambda: self._docs.count(qe.CountRequest(exact=True, filter=filter_)))

    def all_documents(self) -> list[DocumentState]:
        return [DocumentState.from_payload(r.payload) for r in self._scroll(self._docs, None) if r.payload]

    def all_chunks(self, with_vectors: bool = False) -> list[ChunkPoint]:
        return [ChunkPoint.from_payload(r.payload or {}, r.vector if with_vectors else None)  # type: ignore[arg-type]
                for r in self._scroll(self._chunks, None, with_vectors)]

    def compact(self) -> bool:
        """Vacuum both shards, then flush them: only a flush removes replaced segment files and lets the WAL
        be truncated (without it both the WAL and, after a vacuum, the disk and mapped memory keep growing)."""
        with self._write_lock:
            rewrote = False
            for shard in (self._chunks, self._docs):
                rewrote = self._call(shard.optimize) or rewrote
                self._call(shard.flush)
            return rewrote

    def close(self) -> None:
        with self._write_lock:
            for shard in (self._chunks, self._docs):
                try:
                    shard.flush()
                finally:
                    shard.close()

