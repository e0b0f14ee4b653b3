"""The worker: one faust app, the ML state it serves, and the shared moves of every agent.

Agents are plugins (entry point group `gristmill.agents`): each is a `register(pipeline)` function that
declares its faust agents on `pipeline.app`. This module never imports a particular agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from faust.types import EventT, TopicT

from agents.indexer import DocumentIndexer, IndexOutcome
from schemas import DeadLetter, DocumentEvent, Record
from streams import metrics
from streams.batching import MicroBatcher
from streams.chunking import Chunker
from streams.kafka_transport import App
from streams.search import Searcher, SearchRequest, SearchResult
from streams.settings import Settings
from streams.state.encoder import OnnxEncoder
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.registry import BASE_VERSION, LocalModelRegistry, ModelVersion, ensure_base_model
from streams.state.store import StoreError, VectorStore
from streams.state.training_pairs import TrainingPairs
from streams.topics import TopicNames, faust_credentials
from streams.validation import Accepted, RawMessage, Rejected, validate_message

if TYPE_CHECKING:
    from streams.rollout import RolloutProgress
    from streams.trainer import Trainer

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R", bound=Record)


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
        store = ServerVectorStore.connect(settings.qdrant_url, collection, dim, api_key)
    else:
        from streams.state.edge_store import EdgeVectorStore

        store = EdgeVectorStore(settings.shard_dir, collection, dim)
    if settings.faults_file is not None:
        from streams.state.faults import FaultInjectingStore, FaultPlan

        log.warning("fault injection enabled from %s", settings.faults_file)
        store = FaultInjectingStore(store, FaultPlan(settings.faults_file))
    return store


@dataclass(frozen=True)
class Serving:
    """One consistent (model, index) pair: an encoder and the collection built with it. Swapped as a whole, so
    a search or an ingest batch that took it uses one model and one index from start to end."""

    model: ModelVersion
    encoder: OnnxEncoder
    chunker: Chunker
    store: VectorStore
    searcher: Searcher

    def indexer(self) -> DocumentIndexer:
        return DocumentIndexer(self.store, self.encoder, self.chunker)

    def close(self) -> None:
        self.store.close()


class WriteAborted(RuntimeError):
    """The worker is stopping while a store operation keeps failing: the batch stays uncommitted."""


def withhold_acks(events: Sequence[EventT]) -> None:
    """Keep a batch that was not fully handled out of the committed offsets (it is re-delivered after a
    restart). faust's `take_events` acknowledges its batch even when the agent fails; marking the messages
    as already acknowledged turns that into a no-op, and the gap stops every later commit on the partition."""
    for event in events:
        event.message.acked = True


def raw_message(event: EventT) -> RawMessage:
    message = event.message
    return RawMessage(message.topic, message.partition, message.offset, message.key, message.value,
                      message.timestamp)


class Pipeline:
    """Settings, topics, faust app and ML state of one worker process."""

    def __init__(self, settings: Settings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.settings = settings
        self.topics = TopicNames(settings.namespace)
        self.registry = LocalModelRegistry(settings.models_dir, settings.model_name)
        model = ensure_base_model(self.registry)
        self._retiring: dict[str, Serving] = {}  # previous pairs kept open until in-flight searches finish
        self.serving = self.open_serving(model)
        #: doc_ids written while a rollout copies the index (re-applied to the new collection before the switch)
        self.written_during_rollout: set[str] | None = None
        self.rolling = asyncio.Lock()  # one rollout at a time
        self.rollout: RolloutProgress | None = None  # the latest one, for status and the dashboard
        self.query_log = QueryLog(settings.query_log_path)
        self.recent_dead_letters: deque[DeadLetter] = deque(maxlen=50)  # shown on the dashboard
        self.training_pairs: TrainingPairs | None = None  # set by the feedback agent when it is installed
        self.trainer: Trainer | None = None  # set by the trainer agent when it is installed
        # qdrant-edge has one writer per shard: every store write goes through this one thread.
        self._store_writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="search")
        metrics.initialize()
        self.publish_model_info()
        self.app = App(
            settings.app_id,
            broker=f"gristmill://{settings.kafka_bootstrap_servers}",  # aiokafka with a short fetch wait
            value_serializer="raw",
            key_serializer="raw",
            web_enabled=False,
            store="memory://",
            broker_session_timeout=settings.session_timeout_s,
            broker_commit_interval=1.0,
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            in_flight_wait_s=settings.in_flight_wait_s,
            broker_credentials=faust_credentials(settings),
        )

    def open_serving(self, model: ModelVersion) -> Serving:
        """Load `model`'s encoder and open (or create) the collection of its index."""
        retiring = self._retiring.pop(model.version, None)
        if retiring is not None:  # rolled back within the grace period: the pair is still open
            return retiring
        s = self.settings
        encoder = OnnxEncoder(model, threads=s.onnx_threads, batch_size=s.encode_batch_size, int8=s.int8)
        chunker = Chunker(encoder.tokenizer, s.chunk_tokens, s.chunk_overlap, model.max_tokens)
        store = open_store(s, model.dim, model.version)
        searcher = Searcher(encoder, store, cache_size=s.query_cache_size, cache_ttl_s=s.query_cache_ttl_s)
        return Serving(model, encoder, chunker, store, searcher)

    def retire_later(self, serving: Serving) -> None:
        """Close a pair that no longer serves after `rollout_retire_after_s` (unless it serves again by then)."""
        self._retiring[serving.model.version] = serving

        def retire() -> None:
            if self._retiring.get(serving.model.version) is serving:
                del self._retiring[serving.model.version]
                self._store_writer.submit(serving.close)

        asyncio.get_running_loop().call_later(self.settings.rollout_retire_after_s, retire)

    @property
    def encoder(self) -> OnnxEncoder:
        return self.serving.encoder

    @property
    def store(self) -> VectorStore:
        return self.serving.store

    @property
    def searcher(self) -> Searcher:
        return self.serving.searcher

    @property
    def chunker(self) -> Chunker:
        return self.serving.chunker

    def publish_model_info(self) -> None:
        metrics.MODEL.info({"name": self.settings.model_name, "version": self.encoder.version,
                            "provider": self.encoder.provider, "int8": str(self.settings.int8).lower()})

    def apply_documents(self, events: Sequence[DocumentEvent]) -> IndexOutcome:
        """Apply document events to the serving index (on the store-writer thread)."""
        outcome = self.serving.indexer().apply(events)
        if self.written_during_rollout is not None:
            self.written_during_rollout.update(event.doc_id for event in events)
        return outcome

    def topic(self, logical: str) -> TopicT:
        """A public topic, consumed and produced as raw bytes (validation happens in the agents)."""
        return self.app.topic(self.topics[logical], key_serializer="raw", value_serializer="raw",
                              allow_empty=True)

    def batch_agent(self, logical: str, name: str, size: int, within: float,
                    handle: Callable[[Sequence[EventT]], Awaitable[None]]) -> None:
        """Register an agent that hands `logical` to `handle` in micro-batches (`size` records or `within` s).

        A batch is acknowledged only when `handle` returns; if it raises or is cancelled, the batch is kept out
        of the committed offsets (`withhold_acks`) and re-delivered after a restart.
        """
        @self.app.agent(self.topic(logical), name=name)
        async def run(stream):  # type: ignore[no-untyped-def]
            async for events in stream.take_events(size, within):
                try:
                    await handle(events)
                except BaseException:
                    withhold_acks(events)
                    raise

    async def admit(self, events: Sequence[EventT], logical: str, model: type[R], key_field: str | None
                    ) -> list[Accepted[R]]:
        """The validation gate for a batch: count it, dead-letter the rejects (delivered before this returns),
        and return the accepted records."""
        checked = [validate_message(raw_message(e), model, key_field) for e in events]
        accepted = [c for c in checked if isinstance(c, Accepted)]
        metrics.RECORDS_IN.labels(logical).inc(len(checked))
        metrics.RECORDS_VALID.labels(logical).inc(len(accepted))
        await self.dead_letter([c for c in checked if isinstance(c, Rejected)], logical)
        return accepted

    def load_agents(self) -> list[str]:
        """Register the installed agent plugins on the app (those in `settings.agents` when set)."""
        names = []
        installed = sorted(entry_points(group="gristmill.agents"), key=lambda e: e.name)
        chosen = self.settings.agent_names
        unknown = chosen - {entry.name for entry in installed}
        if unknown:
            raise ValueError(f"unknown agents {sorted(unknown)}; installed: {[e.name for e in installed]}")
        for entry in installed:
            if chosen and entry.name not in chosen:
                continue
            entry.load()(self)
            names.append(entry.name)
        return names

    async def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        """Answer a batch of searches on a reader thread (the event loop stays free)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.serving.searcher.search_many, requests)

    @cached_property
    def search_batcher(self) -> MicroBatcher[SearchRequest, SearchResult]:
        """Concurrent single searches (HTTP) share encoder calls (continuous batching)."""
        return MicroBatcher(self.search_many, self.settings.query_batch_records)

    async def log_queries(self, entries: Sequence[LoggedQuery]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._readers, self.query_log.record, entries)

    async def write(self, operation: Callable[[], T], what: str) -> T:
        """Run a store write on the writer thread until it succeeds (see `until_done`)."""
        return await self.until_done(operation, what, self._store_writer)

    async def until_done(self, operation: Callable[[], T], what: str, executor: ThreadPoolExecutor | None = None) -> T:
        """Run a store operation on a thread until it succeeds, backing off while the store fails.

        The calling agent does not move on meanwhile, so its offsets are not committed and consumption
        pauses (backpressure): nothing is dropped. If the worker stops meanwhile, `WriteAborted` is raised.
        """
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            try:
                result = await loop.run_in_executor(executor or self._readers, operation)
                metrics.STORE_UP.set(1)
                return result
            except StoreError as exc:
                metrics.STORE_FAILURES.inc()
                metrics.STORE_UP.set(0)
                if self.app.should_stop:
                    raise WriteAborted(f"{what} not done before shutdown: {exc}") from exc
                log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.store_retry_max_s)

    async def compact_store(self) -> bool:
        """Vacuum and flush the serving index on the writer thread (`VectorStore.compact`); a failure waits for the
        next turn."""
        store = self.serving.store

        def compact() -> tuple[bool, float]:  # timed on the writer thread: not the wait behind ingest batches
            started = time.perf_counter()
            return store.compact(), time.perf_counter() - started

        try:
            rewrote, took = await asyncio.get_running_loop().run_in_executor(self._store_writer, compact)
        except StoreError as exc:
            log.warning("store compaction failed, next try in %.0fs: %s", self.settings.store_compact_interval_s, exc)
            return False
        if rewrote:
            metrics.STORE_COMPACT_SECONDS.observe(took)
            log.info("store compacted in %.2fs", took)
        return rewrote

    async def dead_letter(self, rejected: Sequence[Rejected], logical_topic: str) -> None:
        """Write rejects to `deadletter` and wait until the broker has them (before offsets commit)."""
        if not rejected:
            return
        deadletter = self.topic("deadletter")
        pending = []
        for reject in rejected:
            metrics.RECORDS_INVALID.labels(logical_topic, reject.reason).inc()
            log.info("dead-lettered %s[%d]@%d: %s", reject.message.topic, reject.message.partition,
                     reject.message.offset, "; ".join(f"{e.loc}: {e.msg}" for e in reject.errors))
            letter = reject.dead_letter()
            self.recent_dead_letters.appendleft(letter)
            pending.append(await deadletter.send(key=reject.message.key, value=letter.model_dump_json().encode()))
        await asyncio.gather(*pending)
        metrics.DEADLETTERS_OUT.labels(logical_topic).inc(len(rejected))

    def refresh_consumer_lag(self) -> None:
        """Lag per assigned partition: high watermark (from fetch responses) - committed offset (0 if none)."""
        for tp, end in list(self.app.monitor.tp_end_offsets.items()):
            committed = self.app.consumer._committed_offset.get(tp)  # faust's record of the group's commits
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - (committed or 0)))

    def refresh_index_gauges(self) -> None:
        store = self.serving.store
        metrics.INDEX_CHUNKS.set(store.count_chunks())
        metrics.INDEX_DOCUMENTS.set(store.count_documents())
        metrics.QUERY_LOG_SIZE.set(self.query_log.count())

    def close(self) -> None:
        self._store_writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.serving.close()
        for serving in self._retiring.values():
            serving.close()
        self.query_log.close()
        if self.training_pairs is not None:
            self.training_pairs.close()
