"""An in-memory `VectorStore` (dicts and exact numpy cosine search): the test double of the Qdrant backends.

It runs the same shared algorithms as they do (`QdrantStore`) over primitives on Python dicts, so the contract
suite and the in-process agent tests exercise real behaviour without a shard on disk. It answers dense searches
only (`modes`), as a collection made before sparse vectors does: lexical scoring and fusion are Qdrant's, not
something to imitate here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.state.qdrant_store import Condition, Match, PointToWrite, QdrantStore, StoredPoint
from streams.state.store import VectorQuery


def _matches(payload: Mapping[str, Any], conditions: Sequence[Condition]) -> bool:
    for condition in conditions:
        value = payload.get(condition.key)
        if isinstance(condition, Match):
            if value != condition.value or type(value) is not type(condition.value):
                return False
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < condition.value:
            return False
    return True


class InMemoryVectorStore(QdrantStore):
    """Chunks and ledger in two dicts of `point id -> (vector, payload)`; thread-safe."""

    def __init__(self, collection: str = "chunks", dim: int = 64) -> None:
        super().__init__(collection, dim)
        self._lock = threading.Lock()
        self._collections: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]] = {collection: {}, self.ledger: {}}

    def _select(self, collection: str, conditions: Sequence[Condition]) -> list[str]:
        return [pid for pid, (_, payload) in self._collections[collection].items() if _matches(payload, conditions)]

    def _upsert(self, collection: str, points: Sequence[PointToWrite]) -> None:
        with self._lock:
            for point_id, vector, _, payload in points:
                self._collections[collection][point_id] = (np.asarray(vector, dtype=np.float32), dict(payload))

    def _delete(self, collection: str, conditions: Sequence[Condition]) -> None:
        with self._lock:
            for point_id in self._select(collection, conditions):
                del self._collections[collection][point_id]

    def _set_payload(self, collection: str, conditions: Sequence[Condition], payload: dict[str, Any]) -> None:
        with self._lock:
            for point_id in self._select(collection, conditions):
                self._collections[collection][point_id][1].update(payload)

    def _query(self, query: VectorQuery, limit: int, conditions: Sequence[Condition]
               ) -> list[tuple[float, Mapping[str, Any]]]:
        vector = query.dense
        with self._lock:
            candidates = [self._collections[self.collection][pid] for pid in self._select(self.collection, conditions)]
        if not candidates:
            return []
        query = np.asarray(vector, dtype=np.float32)
        matrix = np.stack([v for v, _ in candidates])
        norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
        scores = matrix @ query / np.where(norms == 0, 1.0, norms)
        order = np.argsort(-scores, kind="stable")[:limit]
        return [(float(scores[i]), dict(candidates[i][1])) for i in order]

    def _scroll_page(self, collection: str, conditions: Sequence[Condition], offset: Any, with_vectors: bool
                     ) -> tuple[list[StoredPoint], Any]:
        with self._lock:
            points = [self._collections[collection][pid] for pid in sorted(self._select(collection, conditions))]
        return [(dict(payload), vector.tolist() if with_vectors else None) for vector, payload in points], None

    def _retrieve(self, collection: str, ids: Sequence[str]) -> list[Mapping[str, Any]]:
        with self._lock:
            stored = self._collections[collection]
            return [dict(stored[i][1]) for i in ids if i in stored]

    def _count(self, collection: str, conditions: Sequence[Condition]) -> int:
        with self._lock:
            return len(self._select(collection, conditions))

    def compact(self) -> bool:
        return False  # nothing is ever left behind

    def close(self) -> None:
        pass
