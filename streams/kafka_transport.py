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

import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from weakref import WeakSet

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_WAIT_EMPTY
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode import Service
from mode.utils.futures import notify

from streams import metrics
from streams.commit_gate import CommitGate

DEFAULT_FETCH_MAX_WAIT_MS = 1500  # faust's own value


class App(faust.App):
    """A faust app that carries the consumer fetch wait and in-flight wait bound for `gristmill://`."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
                 in_flight_wait_s: float | None = None, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.in_flight_wait_s = in_flight_wait_s
        super().__init__(*args, **kwargs)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        return consumer


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
        """Wait for in-flight records before a rebalance or stop, for at most the app's `in_flight_wait_s`."""
        limit = getattr(self.app, "in_flight_wait_s", None)
        if not await drain_in_flight(self, limit):
            self.log.warning("gave up waiting for %d in-flight records after %.0fs: they stay uncommitted and "
                             "will be re-delivered", len(self._unacked_messages), limit)
        await self.commit_and_end_transactions()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
