"""The worker: one faust app, the state its agents share, and the wiring they register through.

Agents are plugins (entry point group `gristmill.agents`): each is a `register(worker)` function that hands its
handlers to `batch_agent`, `observer` and `timer`. This module never imports a particular agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeVar

from aiokafka.errors import KafkaError
from faust.types import EventT, TopicT

from schemas import Record
from streams import metrics
from streams.broker import die_with_parent
from streams.errors import PublishAborted, RecordTooLarge, Unfinished
from streams.index_changes import IndexChangeListener
from streams.index_replica import IndexReplica
from streams.kafka_transport import App, Consumer, QuietWhileStopping
from streams.processing import BatchRunner, Contract, FailureHook, Handler
from streams.settings import Settings
from streams.shared import Shared
from streams.state.errors import OperationAborted, StoreError
from streams.topics import TopicNames, faust_credentials
from streams.validation import RECORD_OVERHEAD_BYTES, RawMessage

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)


def raw_message(event: EventT) -> RawMessage:
    message = event.message
    return RawMessage(message.topic, message.partition, message.offset, message.key, message.value,
                      message.timestamp)


def redelivery(events: Sequence[EventT], unhandled: Mapping[Any, int]) -> dict[Any, int]:
    """Where to read again after a crashed batch: per partition, the lowest offset of the batch or of anything else
    delivered and not handled (the next batch, already filling)."""
    offsets: dict[Any, int] = dict(unhandled)
    for event in events:
        tp = event.message.tp
        offsets[tp] = min(offsets.get(tp, event.message.offset), event.message.offset)
    return offsets


class KafkaOutbox:
    """The `Outbox` of a worker: faust's producer on the namespaced public topics, values as JSON.

    A record over the producer's size limit is refused before anything of its batch is sent (`RecordTooLarge`, a
    failure of that record); a delivery that fails (the broker is away) is retried with backoff until it succeeds,
    or, once the worker stops, given up with `PublishAborted` (the batch is withheld and re-delivered).
    """

    def __init__(self, app: App, names: TopicNames, max_bytes: int, retry_max_s: float = 10.0) -> None:
        self._app = app
        self._names = names
        self._max_bytes = max_bytes
        self._retry_max_s = retry_max_s
        self._topics: dict[str, TopicT] = {}

    def topic(self, logical: str) -> TopicT:
        """A public topic, consumed and produced as raw bytes (validation happens in the agents)."""
        if logical not in self._topics:
            self._topics[logical] = self._app.topic(self._names[logical], key_serializer="raw",
                                                    value_serializer="raw", allow_empty=True)
        return self._topics[logical]

    def external(self, name: str) -> TopicT:
        """A topic outside gristmill's namespace (a source's), consumed as raw bytes; never produced to."""
        key = f"external:{name}"
        if key not in self._topics:
            self._topics[key] = self._app.topic(name, key_serializer="raw", value_serializer="raw",
                                                allow_empty=True)
        return self._topics[key]

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes | None, Record]]) -> None:
        encoded = [(key, record.model_dump_json().encode()) for key, record in items]
        for key, value in encoded:
            size = len(key or b"") + len(value) + RECORD_OVERHEAD_BYTES
            if size > self._max_bytes:
                raise RecordTooLarge(f"a {topic} record of {size:,} bytes exceeds the producer's limit of "
                                     f"{self._max_bytes:,} bytes")
        delay = 0.1
        while encoded:
            results = await asyncio.gather(*(self._deliver(topic, key, value) for key, value in encoded),
                                           return_exceptions=True)
            failures = [(item, result) for item, result in zip(encoded, results, strict=True)
                        if isinstance(result, BaseException)]
            for _, error in failures:
                if not isinstance(error, KafkaError):
                    raise error
            encoded = [item for item, _ in failures]
            if encoded:
                if self._app.should_stop:
                    raise PublishAborted(f"{len(encoded)} {topic} records not delivered before shutdown: "
                                         f"{failures[0][1]!r}")
                log.warning("%d %s records not delivered, retrying in %.1fs: %r", len(encoded), topic, delay,
                            failures[0][1])
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    async def _deliver(self, topic: str, key: bytes | None, value: bytes) -> object:
        return await (await self.topic(topic).send(key=key, value=value))


class Worker:
    """Settings, topics, faust app and shared state of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        metrics.initialize()
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
            producer_max_request_size=settings.producer_max_bytes,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            fetch_idle_wait_ms=settings.fetch_idle_wait_ms,
            in_flight_wait_s=settings.in_flight_wait_s,
            stop_wait_s=settings.stop_wait_s,
            broker_credentials=faust_credentials(settings),
        )
        QuietWhileStopping(lambda: bool(self.app.should_stop)).install()
        self.outbox = KafkaOutbox(self.app, TopicNames(settings.namespace), settings.producer_max_bytes,
                                  settings.store_retry_max_s)
        self.shared = Shared.open(settings, self.outbox, stopping=lambda: bool(self.app.should_stop),
                                  child_setup=die_with_parent)
        self.app.add_dependency(IndexChangeListener(settings, self.shared.index_changes))
        if settings.keeps_index_copy:
            replica = IndexReplica(settings, self.shared.serving, self.shared.threads)
            self.shared.trainer.index_ready = lambda: replica.caught_up
            self.app.add_dependency(replica)
        self.agents: list[str] = []  # the agents registered on this worker

    def batch_agent(self, contract: Contract[R], name: str, size: int, within: float, handler: Handler[R],
                    on_failure: FailureHook[R] | None = None) -> BatchRunner[R]:
        """Consume `contract.topic` in micro-batches (`size` records or `within` s) through a `BatchRunner`.

        A batch counts as handled only when it was processed. If processing is cut short (`Unfinished`,
        cancellation), the commit gate keeps the batch out of the committed offsets and it is re-delivered after a
        restart; anything else that escapes is a crash: counted, the batch read again at once, the agent restarted.
        """
        runner = BatchRunner(contract, name, handler, self.shared.dead_letters, self.shared.health, on_failure)

        topic = self.outbox.external(contract.consumes) if contract.consumes else self.outbox.topic(contract.topic)

        @self.app.agent(topic, name=name)
        async def run(stream: Any) -> None:
            waiting = time.perf_counter()
            async for events in stream.take_batches(size, within):
                if name == "ingest":  # a wait of more than a second was an idle stream, not a fetch
                    waited = time.perf_counter() - waiting
                    metrics.STAGE_SECONDS.labels("fetch" if waited <= 1.0 else "idle").inc(waited)
                try:
                    await runner.run([raw_message(e) for e in events])
                except (Unfinished, OperationAborted) as exc:
                    self.consumer.withhold(e.message for e in events)
                    if self.app.should_stop:  # a stop cut the batch short: not a crash
                        log.warning("agent %s stopped in a batch of %d records (read again at the next start): %s",
                                    name, len(events), exc)
                        return
                    raise
                except asyncio.CancelledError:
                    self.consumer.withhold(e.message for e in events)
                    raise
                except BaseException as exc:
                    self.consumer.withhold(e.message for e in events)
                    self.shared.health.crashed(name, exc)
                    log.exception("agent %s crashed; its batch of %d records is read again", name, len(events))
                    await self.consumer.redeliver(redelivery(events, self.consumer.unhandled(topic.get_topic_name())))
                    raise
                waiting = time.perf_counter()
        return runner

    @property
    def consumer(self) -> Consumer:
        return self.app.consumer  # type: ignore[no-any-return]

    def observer(self, topic: str, name: str, size: int, within: float,
                 observe: Callable[[Sequence[RawMessage]], None], consumes: str | None = None) -> None:
        """Watch a topic beside its agent: each batch is acknowledged as soon as it was observed, so an observer
        never holds an offset back (iterating events one by one would keep the last unacknowledged)."""
        @self.app.agent(self.outbox.external(consumes) if consumes else self.outbox.topic(topic), name=name)
        async def watch(stream: Any) -> None:
            async for events in stream.take_batches(size, within):
                started = time.perf_counter()
                observe([raw_message(e) for e in events])
                if topic == "documents":
                    metrics.STAGE_SECONDS.labels("monitor").inc(time.perf_counter() - started)

    def timer(self, interval_s: float, tick: Callable[[], Awaitable[None]]) -> None:
        """Call `tick` every `interval_s` while the worker runs. A tick that fails is never the worker's end: one
        that finds a store away (a `StoreError`) is skipped with a warning, any other failure is logged with its
        traceback and counted; the next tick tries again."""
        async def run_tick() -> None:  # faust reads a timer's signature to decide whether to pass the app
            name = getattr(tick, "func", tick).__name__
            try:
                await tick()
            except StoreError as exc:
                metrics.STORE_FAILURES.inc()
                log.warning("%s skipped, the next tick tries again: %s", name, exc)
            except Unfinished as exc:  # the worker is stopping
                log.info("%s stopped: %s", name, exc)
            except Exception:
                metrics.TIMER_FAILURES.labels(name).inc()
                log.exception("%s failed; the next tick tries again", name)

        function = getattr(tick, "func", tick)  # a partial names its function
        self.app.timer(interval_s, name=f"{function.__module__}.{function.__qualname__}")(run_tick)

    def load_agents(self) -> list[str]:
        """Register the installed agent plugins (those in `settings.agents` when set)."""
        installed = sorted(entry_points(group="gristmill.agents"), key=lambda e: e.name)
        chosen = self.settings.agent_names
        unknown = chosen - {entry.name for entry in installed}
        if unknown:
            raise ValueError(f"unknown agents {sorted(unknown)}; installed: {[e.name for e in installed]}")
        for entry in installed:
            if not chosen or entry.name in chosen:
                entry.load()(self)
                self.agents.append(entry.name)
        return self.agents

    def refresh_consumer_lag(self) -> None:
        """Lag per assigned partition: high watermark (from fetch responses) - committed offset (0 if none)."""
        for tp, end in list(self.app.monitor.tp_end_offsets.items()):
            committed = self.app.consumer._committed_offset.get(tp)  # faust's record of the group's commits
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - (committed or 0)))

    def refresh_index_gauges(self) -> None:
        store = self.shared.serving.current.store
        metrics.INDEX_CHUNKS.set(store.count_chunks())
        metrics.INDEX_DOCUMENTS.set(store.count_documents())
        metrics.QUERY_LOG_SIZE.set(self.shared.query_log.count())

    def close(self) -> None:
        self.shared.close()
