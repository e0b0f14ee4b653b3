"""faust's aiokafka transport with gristmill's commit gate, a configurable fetch wait (faust hard-codes 1500 ms)
and a bounded wait for in-flight records on rebalance and stop.

Commits go only up to the lowest record delivered to the agents and not handled (`streams.commit_gate`), never
past a withheld batch, whatever faust's own bookkeeping of acknowledged offsets would allow.

A broker that does not answer a long-poll fetch as soon as data arrives (the embedded Tansu broker) would
otherwise add up to 1.5 s to every query round trip. faust waits for every in-flight record to be
acknowledged before it gives partitions up, without a bound; records that never will be (buffered by a
stream while the rebalance suspends it; seen after repeated SIGKILLs) froze a worker in a rebalance. Giving up
after a while is safe: only acknowledged, contiguous offsets are ever committed, so what is still in flight is
re-delivered and applied idempotently. Registered as the `gristmill://` broker scheme through the
`faust.transports` entry point.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol
from weakref import WeakSet

import aiokafka
import faust
from faust.streams import _tracks_buffer_agen
from faust.transport.consumer import CONSUMER_WAIT_EMPTY
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, Message
from faust.types.tuples import ack_lock
from mode import Service
from mode.utils.aiter import aiter
from mode.utils.futures import notify

from streams import metrics
from streams.commit_gate import CommitGate

DEFAULT_FETCH_MAX_WAIT_MS = 1500  # faust's own value
IDLE_CHECK_S = 1.0  # how often an idle batching stream looks whether it should stop


class AdaptiveFetchWait:
    """How long the broker may hold a fetch that finds no data: `busy_ms` while records flow, doubling after
    `idle_after_s` without any up to `idle_ms`, back to `busy_ms` with the first record. A broker that answers an
    empty long-poll only at its deadline (the embedded Tansu) then costs a busy stream at most `busy_ms` of latency,
    and an idle worker and broker almost no CPU; only the first record after an idle stretch can wait up to
    `idle_ms`."""

    def __init__(self, busy_ms: int, idle_ms: int, idle_after_s: float = 1.0) -> None:
        self.busy_ms, self.idle_ms, self.idle_after_s = busy_ms, max(idle_ms, busy_ms), idle_after_s
        self.wait_ms = busy_ms
        self._last_record = time.monotonic()

    def after_fetch(self, records: int, now: float | None = None) -> int:
        """The wait for the next fetch, given how many records this one brought."""
        now = time.monotonic() if now is None else now
        if records:
            self._last_record, self.wait_ms = now, self.busy_ms
        elif now - self._last_record >= self.idle_after_s:
            self.wait_ms = min(self.idle_ms, self.wait_ms * 2)
        return self.wait_ms


class BatchingStream(faust.Stream):  # type: ignore[misc]
    """A faust stream whose batches wait for their first record without a short timer: an idle agent wakes once a
    second (to see whether it should stop) instead of every `within` seconds (faust's `take_events` does, 333 times a
    second for the query agent's 3 ms); `within` bounds how long a batch waits to fill once its first record is
    there. The next batch fills while one is consumed (faust's holds every record back until then), so a busy agent
    finds its next batch ready; a full next batch holds the stream back."""

    @_tracks_buffer_agen
    async def take_batches(self, max_: int, within: float) -> AsyncGenerator[Sequence[EventT], None]:
        """Like `take_events`: up to `max_` events, acknowledged after the consumer of the batch is done."""
        events: list[EventT] = []  # the next batch
        buffer_full, buffer_consumed, record_arrived = asyncio.Event(), asyncio.Event(), asyncio.Event()
        enable_acks = self.enable_acks

        async def add_to_buffer(value: Any) -> Any:
            if self.current_event is None:
                raise RuntimeError("batch buffer found current_event is None")
            events.append(self.current_event)
            record_arrived.set()
            if len(events) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await self.wait(buffer_consumed)
            return value

        self.enable_acks = False  # acknowledged below, once the batch was consumed
        self.add_processor(add_to_buffer)
        self._enable_passive(aiter(self.channel))
        try:
            while not self.should_stop:
                if not events:  # idle: wake once a second to see whether the stream stops, not every `within`
                    await self.wait_for_stopped(record_arrived, timeout=IDLE_CHECK_S)
                    if not events:
                        continue
                await self.wait_for_stopped(buffer_full, timeout=within)
                if events:
                    batch, events[:] = list(events), []
                    record_arrived.clear()
                    buffer_full.clear()
                    buffer_consumed.set()  # the next batch fills from here on
                    try:
                        yield batch
                    finally:
                        for event in batch:
                            await self.ack(event)
        finally:
            self.enable_acks = enable_acks
            self._processors.remove(add_to_buffer)
            await self._release(events)

    async def _release(self, events: Sequence[EventT]) -> None:
        """Events buffered and never handed over (the agent stops): no longer in flight, so a stop or rebalance
        does not wait for them, and never committed past; they are read again from the committed offset."""
        withhold = getattr(self.app.consumer, "withhold", None)
        if withhold is not None:
            withhold(e.message for e in events)
        for event in events:
            await self.ack(event)


class App(faust.App):
    """A faust app that carries the consumer's adaptive fetch wait and in-flight wait bound for `gristmill://`, and
    whose streams batch without idle timers."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
                 fetch_idle_wait_ms: int | None = None, in_flight_wait_s: float | None = None,
                 stop_wait_s: float | None = None, **kwargs: Any) -> None:
        self.fetch_wait = AdaptiveFetchWait(fetch_max_wait_ms, fetch_idle_wait_ms or fetch_max_wait_ms)
        self.in_flight_wait_s = in_flight_wait_s
        self.stop_wait_s = stop_wait_s if stop_wait_s is not None else in_flight_wait_s
        super().__init__(*args, Stream=BatchingStream, **kwargs)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_wait", None)
        consumer._fetch_max_wait_ms = wait.busy_ms if wait else DEFAULT_FETCH_MAX_WAIT_MS
        return consumer

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: set[TP],
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)
        wait = getattr(self.app, "fetch_wait", None)
        if wait is not None:  # the fetcher reads this for every fetch request it sends
            consumer._fetcher._fetch_max_wait_ms = wait.after_fetch(sum(len(r) for r in records.values()))
        return records


class InFlight(Protocol):
    """The parts of a faust consumer that track in-flight (delivered, not yet acknowledged) records."""

    should_stop: bool
    _unacked_messages: Any

    async def commit(self) -> bool: ...

    async def _wait_for_ack(self, timeout: float) -> None: ...

    def _clean_unacked_messages(self) -> None: ...


async def drain_in_flight(consumer: InFlight, limit_s: float | None) -> bool:
    """faust's `wait_empty` loop with a deadline: commit what is acknowledged and wait for the rest, for at most
    `limit_s`. False when it gave up at the deadline (a stopping consumer does not wait, as in faust).

    (Cancelling faust's own loop from outside does not work: its `_wait_for_ack` swallows `CancelledError`.)
    """
    deadline = None if limit_s is None else time.monotonic() + limit_s
    while not consumer.should_stop and consumer._unacked_messages:
        await consumer.commit()
        if not consumer._unacked_messages:
            break
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await consumer._wait_for_ack(timeout=1)
        consumer._clean_unacked_messages()
    return True


class DeliveredMessages(WeakSet):  # type: ignore[type-arg]
    """faust's set of in-flight messages, which also tells the commit gate of every delivery (faust's streams add
    to this set directly rather than through `Consumer.track_message`)."""

    def __init__(self, gate: CommitGate) -> None:
        super().__init__()
        self.gate = gate

    def add(self, message: Message) -> None:
        super().add(message)
        self.gate.delivered(message.tp, message.offset)


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = CommitGate()
        self._unacked_messages = DeliveredMessages(self.gate)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def withhold(self, messages: Iterable[Message]) -> None:
        """These records were not handled: their acknowledgements must not let commits pass them."""
        for message in messages:
            self.gate.withhold(message.tp, message.offset)

    def ack(self, message: Message) -> bool:
        with ack_lock:
            if not message.acked and not self.gate.acknowledged(message.tp, message.offset):
                message.acked = True  # withheld: no longer in flight, never committed past
                self._unacked_messages.discard(message)
                notify(self._waiting_for_ack)
                return False
            return super().ack(message)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        started = time.perf_counter()
        try:
            return await super()._commit(offsets)  # type: ignore[no-any-return]
        finally:
            metrics.STAGE_SECONDS.labels("commit").inc(time.perf_counter() - started)

    def _new_offset(self, tp: TP) -> int | None:
        """The commit gate decides; faust's list of acknowledged offsets is only cleared (it is not used)."""
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        return self.gate.safe_offset(tp)

    async def seek(self, partition: TP, offset: int) -> None:
        self.gate.rewind(partition, offset)
        await super().seek(partition, offset)

    def unhandled(self, topic: str) -> dict[TP, int]:
        """The lowest delivered, unhandled offset of each of `topic`'s partitions that has one: a batch in
        processing, and the next one filling behind it."""
        return {tp: offset for tp, offset in self.gate.lowest_pending().items()
                if tp.topic == topic}  # type: ignore[attr-defined]

    async def redeliver(self, offsets: Mapping[TP, int]) -> None:
        """Read these partitions again from these offsets (withheld records are processed again in this run)."""
        for tp, offset in offsets.items():
            await self.seek(tp, offset)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.gate.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self.gate.forget(assigned)  # reading restarts from the committed offsets
        await super().on_partitions_assigned(assigned, generation_id)

    @Service.transitions_to(CONSUMER_WAIT_EMPTY)
    async def wait_empty(self) -> None:
        """Wait for in-flight records before a rebalance, for at most the app's `in_flight_wait_s`, or a stop, for at
        most its `stop_wait_s` (what is not done by then is re-delivered after the restart)."""
        limit = getattr(self.app, "in_flight_wait_s", None)
        if getattr(self.app, "should_stop", False):  # a stop: a supervisor's grace period is short
            limit = getattr(self.app, "stop_wait_s", limit)
        if not await drain_in_flight(self, limit):
            self.log.warning("gave up waiting for %d in-flight records after %.0fs: they stay uncommitted and "
                             "will be re-delivered", len(self._unacked_messages), limit)
        await self.commit_and_end_transactions()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def aiokafka_loggers() -> list[logging.Logger]:
    """aiokafka's loggers (a filter on a logger applies to records logged on it, not on its children)."""
    names = [name for name in logging.Logger.manager.loggerDict if name == "aiokafka" or name.startswith("aiokafka.")]
    return [logging.getLogger(name) for name in sorted({"aiokafka", *names})]


class QuietWhileStopping(logging.Filter):
    """While the worker stops, aiokafka's errors are about the connections the worker is closing itself (a stop in
    the middle of a group join, a fetch or an offset lookup): they are logged at INFO then, not as ERROR lines."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        super().__init__()
        self.stopping = stopping

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and self.stopping():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True

    def install(self) -> QuietWhileStopping:
        """Filter every aiokafka logger, in place of an earlier worker's filter (one per process)."""
        for logger in aiokafka_loggers():
            for earlier in [f for f in logger.filters if isinstance(f, QuietWhileStopping)]:
                logger.removeFilter(earlier)
            logger.addFilter(self)
        return self

    def uninstall(self) -> None:
        for logger in aiokafka_loggers():
            logger.removeFilter(self)
