"""Semantic search over the serving index: embed the query, nearest chunks, stamped with versions."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from streams.state.encoder import Encoder
from streams.state.store import ScalarValue, SearchHit, VectorStore


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    model_version: str
    index_version: str
    latency_ms: float


class Searcher:
    """One (encoder, index) pair; the index was built by `index_version` of the model."""

    def __init__(self, encoder: Encoder, store: VectorStore, index_version: str | None = None) -> None:
        self.encoder = encoder
        self.store = store
        self.index_version = index_version or encoder.version

    def search(self, text: str, limit: int = 10, filter_: Mapping[str, ScalarValue] | None = None) -> SearchResult:
        started = time.perf_counter()
        vector = self.encoder.encode([text])[0]
        hits = self.store.search(vector, limit, filter_)
        return SearchResult(hits, self.encoder.version, self.index_version,
                            (time.perf_counter() - started) * 1000)
