"""Semantic search over the serving index: embed queries in one batch, nearest chunks, a version-keyed cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from cachetools import TTLCache

from schemas.records import FilterValue, filter_cache_key, validate_filter
from streams import metrics
from streams.ml.exact import exact_first, identifier_tokens
from streams.state.encoder import Encoder
from streams.state.sparse import SparseEncoder
from streams.state.store import PUBLIC, Access, Fusion, Mode, SearchHit, VectorQuery, VectorStore

MAX_CANDIDATES = 10_000  # chunks a document-level search reads at most to find its documents


Group = Literal["chunk", "doc"]


@dataclass(frozen=True)
class SearchRequest:
    """A search: `mode` None means the searcher's default; `group="doc"` answers at most one hit (its best chunk)
    per document, so `limit` counts documents. `access` says whose search it is: public documents only unless
    the caller's principals open more."""

    text: str
    limit: int = 10
    filter: Mapping[str, FilterValue] = field(default_factory=dict)
    mode: Mode | None = None
    group: Group = "chunk"
    access: Access = PUBLIC


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    model_version: str
    index_version: str
    latency_ms: float
    cached: bool = False
    mode: Mode = "dense"  # the mode that answered (dense where the collection has no sparse vectors)
    group: Group = "chunk"


def normalize_query(text: str) -> str:
    """Texts the (uncased) encoder sees identically share a cache entry."""
    return " ".join(text.casefold().split())


def result_bytes(result: SearchResult) -> int:
    """About what a cached answer holds in memory (its texts dominate)."""
    return 256 + sum(200 + len(hit.text) + len(hit.doc_id) for hit in result.hits)


class Searcher:
    """Answers searches from one (encoder, index) pair; `index_version` names the model that built the index.

    Dense, sparse (BM25) and hybrid searches all run inside the store (hybrid: both rankings prefetched and fused
    by Qdrant); a mode the collection cannot answer (one made before chunks carried sparse vectors) is answered
    dense, and the result says so. Document-level searches read chunks until they have `limit` documents. With
    `exact_first`, a sparse or hybrid query holding identifier-like tokens reads at least `candidates` fused
    chunks and ranks those among them containing its rare tokens verbatim first (`streams.ml.exact`).

    Repeated queries within the same versions and access come from a TTL cache, bounded by entries and by bytes. The TTL
    bounds how long a cached answer can miss documents indexed after it; an index write that replaces or deletes
    a document bumps the write generation (`invalidate`), which is part of every key, so no answer, cached or
    not, shows chunks that were replaced or deleted.
    """

    def __init__(self, encoder: Encoder, store: VectorStore, index_version: str | None = None,
                 cache_size: int = 10_000, cache_ttl_s: float = 30.0, cache_bytes: int = 64 * 2**20,
                 sparse: SparseEncoder | None = None, default_mode: Mode = "hybrid", fusion: Fusion = "rrf",
                 candidates: int = 100, rrf_k: int = 60, group_candidates: int = 4, exact_first: bool = True) -> None:
        self.encoder = encoder
        self.store = store
        self.sparse = sparse
        self.default_mode: Mode = default_mode
        self.fusion: Fusion = fusion
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.group_candidates = group_candidates
        self.exact_first = exact_first
        self.index_version = index_version or encoder.version
        # every entry costs at least `cache_bytes / cache_size`: at most `cache_size` entries, `cache_bytes` bytes
        least = max(1, cache_bytes // max(1, cache_size))
        self._cache: TTLCache[tuple[object, ...], SearchResult] | None = (
            TTLCache(cache_bytes, cache_ttl_s, getsizeof=lambda r: max(least, result_bytes(r)))
            if cache_size > 0 and cache_bytes > 0 else None)
        self._lock = threading.Lock()
        self.generation = 0  # index writes that replaced or deleted documents

    def invalidate(self) -> None:
        """The index changed what answers may contain: cached answers are no longer served."""
        with self._lock:
            self.generation += 1
            if self._cache is not None:
                self._cache.clear()

    def mode_of(self, request: SearchRequest) -> Mode:
        """The mode that answers `request`: its own or the default, dense where the collection has no sparse
        vectors (or no sparse encoder is at hand)."""
        mode = request.mode or self.default_mode
        if mode != "dense" and (mode not in self.store.modes or self.sparse is None):
            return "dense"
        return mode

    def _key(self, request: SearchRequest, generation: int) -> tuple[object, ...]:
        """Requests answered alike share a key: the identifiers keep their case (`readSensorFrame` is one, a
        lower-cased `readsensorframe` is not)."""
        mode = self.mode_of(request)
        identifiers = tuple(t.casefold() for t in self._identifiers(request, mode))
        return (normalize_query(request.text), identifiers, request.limit, filter_cache_key(request.filter), mode,
                request.group, request.access, self.fusion, self.encoder.version, self.index_version, generation)

    def search(self, text: str, limit: int = 10, filter_: Mapping[str, FilterValue] | None = None,
               mode: Mode | None = None, group: Group = "chunk", access: Access = PUBLIC) -> SearchResult:
        return self.search_many([SearchRequest(text, limit, dict(filter_ or {}), mode, group, access)])[0]

    def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        """Answer a batch: cache hits at once, the misses embedded together in one encoder call."""
        started = time.perf_counter()
        for request in requests:
            validate_filter(request.filter)
        results: list[SearchResult | None] = [None] * len(requests)
        misses: list[int] = []
        with self._lock:
            generation = self.generation  # answers are cached under the generation they were searched in
            for i, request in enumerate(requests):
                cached = self._cache.get(self._key(request, generation)) if self._cache is not None else None
                if cached is None:
                    misses.append(i)
                else:
                    results[i] = replace(cached, cached=True, latency_ms=(time.perf_counter() - started) * 1000)
        metrics.QUERY_CACHE.labels("hit").inc(len(requests) - len(misses))
        metrics.QUERY_CACHE.labels("miss").inc(len(misses))
        if misses:
            modes = {i: self.mode_of(requests[i]) for i in misses}
            dense_needed = [i for i in misses if modes[i] != "sparse"]
            vectors = dict(zip(dense_needed, self.encoder.encode([requests[i].text for i in dense_needed]),
                               strict=True))  # one encoder call for the batch
            for i in misses:
                request, mode = requests[i], modes[i]
                lexical = self.sparse.embed_query(request.text) if mode != "dense" and self.sparse else None
                query = VectorQuery(vectors.get(i), lexical, mode, self.fusion, self.candidates, self.rrf_k)
                hits = self._find(query, request)
                results[i] = SearchResult(hits, self.encoder.version, self.index_version,
                                          (time.perf_counter() - started) * 1000, mode=mode, group=request.group)
            if self._cache is not None:
                with self._lock:
                    for i in misses:
                        if result_bytes(results[i]) <= self._cache.maxsize:  # type: ignore[arg-type]
                            self._cache[self._key(requests[i], generation)] = results[i]  # type: ignore[assignment]
        return results  # type: ignore[return-value]

    def _find(self, query: VectorQuery, request: SearchRequest) -> list[SearchHit]:
        """Chunk hits, or one hit per document (its best chunk, scored as fused for the document); exact matches
        of the query's rare identifiers first among the first `candidates` fused chunks where the mode is lexical."""
        tokens = self._identifiers(request, query.mode)
        least = query.candidates if tokens else 0  # the window exact matches are looked for in, read in full
        if request.group == "chunk":
            fetch = max(request.limit, least)
            chunks = self.store.search(replace(query, candidates=max(query.candidates, fetch)), fetch,
                                       request.filter, request.access)
            return exact_first(chunks, tokens, query.candidates)[:request.limit]
        fetch = min(MAX_CANDIDATES, max(request.limit * self.group_candidates, least))
        while True:
            chunks = self.store.search(replace(query, candidates=max(query.candidates, fetch)), fetch, request.filter,
                                       request.access)
            best: dict[str, SearchHit] = {}
            for hit in exact_first(chunks, tokens, query.candidates):
                best.setdefault(hit.doc_id, hit)
            if len(best) >= request.limit or len(chunks) < fetch or fetch >= MAX_CANDIDATES:
                return list(best.values())[:request.limit]
            fetch = min(MAX_CANDIDATES, fetch * 4)

    def _identifiers(self, request: SearchRequest, mode: Mode) -> tuple[str, ...]:
        """The identifier-like tokens `request` is reordered by: none in dense mode or with `exact_first` off."""
        return identifier_tokens(request.text) if self.exact_first and mode != "dense" else ()
