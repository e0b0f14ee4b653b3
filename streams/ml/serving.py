"""The serving pair (one model and the index it built, swapped as a whole) and the slot that holds it.

A search or an ingest batch takes the pair once and uses one model and one index from start to end; a rollout
builds the next pair beside it and switches the slot in one assignment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from schemas import DocumentEvent
from streams import metrics
from streams.ml.chunking import Chunker
from streams.ml.indexer import DocumentIndexer, IndexOutcome
from streams.ml.search import Searcher
from streams.settings import Settings
from streams.state.embedding_cache import EmbeddingCache, process_embedding_cache
from streams.state.encoder import Encoder, OnnxEncoder
from streams.state.known_vectors import KnownVectors
from streams.state.registry import BASE_VERSION, LocalModelRegistry, ModelRegistry, ModelVersion
from streams.state.sparse import Bm25Encoder, Bm25Parameters, SparseEncoder
from streams.state.store import VectorStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Write(Protocol):
    """Runs a store operation on the one store-writer thread, retrying while the store fails."""

    def __call__(self, operation: Callable[[], T], what: str) -> Awaitable[T]: ...


def open_registry(settings: Settings) -> LocalModelRegistry:
    """The configured model registry (`GRISTMILL_REGISTRY_DIR`, default DATA_DIR/models)."""
    return LocalModelRegistry(settings.models_dir, settings.model_name)


def collection_name(settings: Settings, model_version: str) -> str:
    """The collection a model version's index lives in: the base model's keeps the plain name."""
    base = f"{settings.namespace}-{settings.collection}" if settings.namespace else settings.collection
    return base if model_version == BASE_VERSION else f"{base}-{model_version}"


def open_store(settings: Settings, dim: int, model_version: str = BASE_VERSION) -> VectorStore:
    """qdrant-client against `QDRANT_URL` when set, else an embedded qdrant-edge shard under DATA_DIR;
    wrapped for fault injection when `GRISTMILL_FAULTS_FILE` is set."""
    collection = collection_name(settings, model_version)
    store: VectorStore
    if settings.qdrant_url:
        from streams.state.server_store import ServerVectorStore

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        store = ServerVectorStore.connect(settings.qdrant_url, collection, dim, api_key, settings.sparse_vectors,
                                          settings.qdrant_request_max_bytes)
    else:
        from streams.state.edge_store import EdgeVectorStore

        store = EdgeVectorStore(settings.shard_dir, collection, dim, settings.sparse_vectors)
    if settings.metadata_index_types:
        store.index_metadata(settings.metadata_index_types)
    if settings.faults_file is not None:
        from streams.state.faults import FaultInjectingStore, FaultPlan

        log.warning("fault injection enabled from %s", settings.faults_file)
        store = FaultInjectingStore(store, FaultPlan(settings.faults_file))
    return store


@dataclass(frozen=True)
class Serving:
    """One consistent (model, index) pair: an encoder and the collection built with it."""

    model: ModelVersion
    encoder: Encoder
    chunker: Chunker
    store: VectorStore
    searcher: Searcher
    sparse: SparseEncoder | None = None  # BM25, where the collection holds sparse vectors
    known: KnownVectors | None = None  # the vectors the version shipped with (its trainer's), by chunk text
    cache: EmbeddingCache | None = None  # the process's vectors of late, by (weights, chunk text)
    weights: str | None = None  # what makes this encoder's vectors (its files' digest): the cache's key

    def indexer(self) -> DocumentIndexer:
        return DocumentIndexer(self.store, self.encoder, self.chunker, self.sparse, self.known, cache=self.cache,
                               weights=self.weights)

    def close(self) -> None:
        self.store.close()


#: Opens the pair of a model version (its encoder and its collection).
PairOpener = Callable[[ModelVersion], Serving]


def bm25(settings: Settings) -> Bm25Encoder:
    return Bm25Encoder(Bm25Parameters(settings.bm25_k1, settings.bm25_b, settings.bm25_avg_len))


def serving_pair(settings: Settings, model: ModelVersion, encoder: Encoder, store: VectorStore) -> Serving:
    """The pair of `encoder` and `store`, chunked, searched and cached as `settings` say."""
    chunker = Chunker(encoder.tokenizer, settings.chunk_tokens, settings.chunk_overlap, encoder.max_tokens,
                      settings.chunk_boundary_every)
    sparse = bm25(settings) if "sparse" in store.modes else None
    searcher = Searcher(encoder, store, cache_size=settings.query_cache_size, cache_ttl_s=settings.query_cache_ttl_s,
                        cache_bytes=settings.query_cache_bytes, sparse=sparse, default_mode=settings.search_mode,
                        fusion=settings.search_fusion, candidates=settings.search_candidates, rrf_k=settings.rrf_k,
                        group_candidates=settings.group_candidates, exact_first=settings.search_exact_first)
    known = KnownVectors.of(model.path, int8=settings.int8)
    size = settings.embedding_cache_bytes  # encoders other than ONNX Runtime's (test doubles): no cache
    weights = encoder.weights_digest if size and isinstance(encoder, OnnxEncoder) else None
    cache = process_embedding_cache(size) if weights else None
    return Serving(model, encoder, chunker, store, searcher, sparse,
                   known if known is not None and known.dim == encoder.dim else None, cache, weights)


def onnx_pairs(settings: Settings) -> PairOpener:
    """Pairs of an ONNX Runtime encoder and the version's collection in the configured store."""
    def open_pair(model: ModelVersion) -> Serving:
        return serving_pair(settings, model, open_encoder(settings, model), open_store(settings, model.dim,
                                                                                       model.version))
    return open_pair


def open_encoder(settings: Settings, model: ModelVersion, *, threads: int | None = None, spinning: bool = True
                 ) -> OnnxEncoder:
    """The configured ONNX Runtime encoder of `model` (threads, batch bounds, int8)."""
    return OnnxEncoder(model, threads=threads or settings.onnx_threads, batch_size=settings.encode_batch_size,
                       batch_tokens=settings.encode_batch_tokens, int8=settings.int8, spinning=spinning)


class ChallengerPairs:
    """How an experiment's candidate pair is opened, and made fit to serve when the experiment promotes it.

    A shadow's encoder runs on its caller's thread alone (the shadow thread, at lower priority: it takes no core
    from serving); a split's or interleave's on as many threads as serving's. Neither spins after a run, so
    neither holds cores the serving session needs next. Promoted, the same collection gets a serving encoder.
    """

    def __init__(self, settings: Settings | None = None, opener: PairOpener | None = None) -> None:
        """With `settings`: ONNX Runtime pairs as above; with `opener` (test doubles): that opener's pairs."""
        self.settings = settings
        self.opener = opener

    def open(self, model: ModelVersion, mode: str, reuse: Serving | None = None) -> Serving:
        """The candidate pair for `mode`; on the collection of `reuse` when given (a pair still open: one writer
        per shard)."""
        if self.settings is None:
            assert self.opener is not None
            return reuse or self.opener(model)
        s = self.settings
        encoder = open_encoder(s, model, threads=1 if mode == "shadow" else None, spinning=False)
        return serving_pair(s, model, encoder, reuse.store if reuse else open_store(s, model.dim, model.version))

    def for_serving(self, pair: Serving) -> Serving:
        if self.settings is None:
            return pair
        s = self.settings
        return serving_pair(s, pair.model, open_encoder(s, pair.model), pair.store)


@dataclass
class RolloutProgress:
    """What `gristmill status`, `/health` and the dashboard show about the latest rollout."""

    version: str
    previous: str
    state: str = "copying"  # copying, switched, failed
    documents: int = 0
    copied: int = 0
    embedded: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "progress": round(self.copied / self.documents, 4) if self.documents else 1.0}


class ServingSlot:
    """Which pair serves now, the pairs retired but still open for searches in flight, and the rollout state."""

    def __init__(self, registry: ModelRegistry, model: ModelVersion, opener: PairOpener,
                 retire_after_s: float = 30.0, closer: Callable[[Serving], None] | None = None,
                 challengers: ChallengerPairs | None = None) -> None:
        self.registry = registry
        self._opener = opener
        self._challengers = challengers or ChallengerPairs(opener=opener)
        self._retired_challengers: set[str] = set()  # versions in `_retiring` that were challengers
        self._retire_after_s = retire_after_s
        self._closer = closer or (lambda pair: pair.close())
        self._retiring: dict[str, Serving] = {}
        #: an experiment's candidate pair: kept as fresh as the serving one, answers only what the experiment routes
        self.challenger: Serving | None = None
        self.current = self.open(model)
        #: doc_ids written while a rollout copies the index (re-applied to the new collection before the switch)
        self.written_during_rollout: set[str] | None = None
        self.rolling = asyncio.Lock()  # one rollout at a time
        self.rollout: RolloutProgress | None = None  # the latest one
        self.challenger_build: RolloutProgress | None = None  # the latest experiment's collection being built
        self.refused: deque[dict[str, object]] = deque(maxlen=20)  # model decisions not applied, and why
        self.publish_model_info()

    def open(self, model: ModelVersion) -> Serving:
        """The pair of `model`: the challenger's, or still open if it served within the grace period, else loaded
        anew."""
        if self.challenger is not None and self.challenger.model.version == model.version:
            pair = self._challengers.for_serving(self.challenger)  # the same collection, a serving encoder
            self.challenger = pair
            return pair
        retired = self._retiring.pop(model.version, None)
        if retired is not None and model.version in self._retired_challengers:
            self._retired_challengers.discard(model.version)
            return self._challengers.for_serving(retired)
        return retired or self._opener(model)

    def switch(self, to: Serving) -> Serving:
        """Serve `to` from now on (one assignment); returns the pair that served before. A challenger that starts
        serving is no longer a challenger."""
        before, self.current = self.current, to
        if self.challenger is to:
            self.challenger = None
        return before

    def open_challenger(self, model: ModelVersion, mode: str) -> Serving:
        """The pair an experiment of `mode` challenges serving with (see `ChallengerPairs`)."""
        self._retired_challengers.discard(model.version)
        return self._challengers.open(model, mode, self._retiring.pop(model.version, None))

    def attach_challenger(self, pair: Serving) -> None:
        """Keep `pair` beside the serving one for an experiment (call it on the store-writer thread)."""
        self.challenger = pair

    def detach_challenger(self) -> Serving | None:
        """End the experiment's pair (call it on the store-writer thread) and retire it (searches in flight
        finish; reopened within the grace period, it gets a serving encoder)."""
        pair, self.challenger = self.challenger, None
        if pair is not None:
            self._retired_challengers.add(pair.model.version)
        return pair

    def retire_later(self, pair: Serving) -> None:
        """Close a pair that no longer serves after the grace period (unless it serves again by then)."""
        self._retiring[pair.model.version] = pair

        def retire() -> None:
            if self._retiring.get(pair.model.version) is pair:
                del self._retiring[pair.model.version]
                self._retired_challengers.discard(pair.model.version)
                if not self.in_use(pair):  # its collection may serve again, through another pair of that version
                    self._closer(pair)

        asyncio.get_running_loop().call_later(self._retire_after_s, retire)

    def in_use(self, pair: Serving) -> bool:
        """Whether `pair`'s collection serves or challenges now (a pair made fit to serve shares its store)."""
        return any(other is not None and other.store is pair.store for other in (self.current, self.challenger))

    def refuse(self, version: str, status: str, reason: str, position: object) -> None:
        """A model decision this worker did not apply (the log's order or the registry refused it): logged, counted
        and kept for `/health`."""
        log.warning("model decision %s %s at %s not applied: %s", status, version, position, reason)
        metrics.DECISIONS_REFUSED.inc()
        self.refused.appendleft({"version": version, "status": status, "reason": reason, "position": str(position),
                                 "at": time.time()})

    def rollout_running(self) -> bool:
        return self.rolling.locked()

    def rollout_failed(self, version: str) -> bool:
        return self.rollout is not None and self.rollout.version == version and self.rollout.state == "failed"

    def serves(self, version: str) -> bool:
        return self.current.model.version == version

    def invalidate_caches(self) -> None:
        """Drop the cached answers of every pair this worker holds (indexed documents changed)."""
        for pair in (self.current, self.challenger, *self._retiring.values()):
            if pair is not None:
                pair.searcher.invalidate()

    def apply_documents(self, events: Sequence[DocumentEvent]) -> IndexOutcome:
        """Apply document events to the serving index (call it on the store-writer thread)."""
        pair = self.current
        try:
            outcome = pair.indexer().apply(events)
            if outcome.replaced:
                pair.searcher.invalidate()  # no answer may show the replaced or deleted chunks
                metrics.CACHE_INVALIDATIONS.labels("local").inc()
            challenger = self.challenger
            if challenger is not None and challenger.indexer().apply(events).replaced:  # kept exactly as fresh
                challenger.searcher.invalidate()
        finally:  # written or half-written: a rollout copies them again
            if self.written_during_rollout is not None:
                self.written_during_rollout.update(event.doc_id for event in events)
        return outcome

    def restore_document(self, doc_id: str, failed: DocumentEvent | None = None) -> None:
        """After a failed write of `doc_id` (by `failed`): its chunks as its ledger entry says, readable only by
        whom both acls allow (on the store-writer thread)."""
        try:
            for pair in (self.current, self.challenger):
                if pair is not None:
                    try:
                        pair.indexer().restore(doc_id, failed)
                    finally:  # one pair's failure leaves the other restored all the same
                        pair.searcher.invalidate()
        finally:
            if self.written_during_rollout is not None:
                self.written_during_rollout.add(doc_id)

    def publish_model_info(self) -> None:
        encoder = self.current.encoder
        metrics.MODEL.info({"name": self.registry.name, "version": encoder.version, "provider": encoder.provider,
                            "int8": str(getattr(encoder, "int8", False)).lower()})

    def close(self) -> None:
        self.current.close()
        if self.challenger is not None:
            self.challenger.close()
        for pair in self._retiring.values():
            pair.close()
        self._retiring.clear()
