"""An in-memory `VectorStore` (dicts and exact numpy cosine search): the test double of the Qdrant backends.

It runs the same shared algorithms as they do (`QdrantStore`) over primitives on Python dicts, so the contract
suite and the in-process agent tests exercise real behaviour without a shard on disk. It answers dense searches
only (`modes`), as a collection made before sparse vectors does: lexical scoring and fusion are Qdrant's, not
something to imitate here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from streams.state.qdrant_store import (
    AtLeast,
    Between,
    Condition,
    DatesBetween,
    Exists,
    Match,
    MatchAny,
    Missing,
    PointToWrite,
    QdrantStore,
    StoredPoint,
)
from streams.state.store import VectorQuery


def _field(payload: Mapping[str, Any], key: str) -> Any:
    """The payload's value at a dotted key (`metadata.lang`), None when absent."""
    value: Any = payload
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _within(value: Any, gt: Any, gte: Any, lt: Any, lte: Any) -> bool:
    return ((gt is None or value > gt) and (gte is None or value >= gte) and (lt is None or value < lt)
            and (lte is None or value <= lte))


def _equal(value: Any, wanted: Any) -> bool:
    return value == wanted and type(value) is type(wanted)  # as Qdrant's keyword, integer and bool matches


def _holds(value: Any, condition: Condition) -> bool:
    """Qdrant's semantics on one value (a list matches when any element does)."""
    if isinstance(condition, Match):
        return _equal(value, condition.value)
    if isinstance(condition, MatchAny):
        return any(_equal(value, wanted) for wanted in condition.values)
    if isinstance(condition, AtLeast):
        return _number(value) and value >= condition.value
    if isinstance(condition, Between):
        return _number(value) and _within(value, condition.gt, condition.gte, condition.lt, condition.lte)
    if isinstance(condition, DatesBetween):
        moment = _moment(value)
        bounds = [None if b is None else _moment(b) for b in (condition.gt, condition.gte, condition.lt, condition.lte)]
        return moment is not None and _within(moment, *bounds)
    return value is not None  # Exists


def _matches(payload: Mapping[str, Any], conditions: Sequence[Condition]) -> bool:
    for condition in conditions:
        value = _field(payload, condition.key)
        values = value if isinstance(value, list) else [value]
        if isinstance(condition, Exists | Missing):
            if any(v is not None for v in values) != isinstance(condition, Exists):
                return False
        elif not any(_holds(v, condition) for v in values):
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
