"""faust's aiokafka transport with a configurable fetch wait (faust hard-codes 1500 ms) and a bounded wait for
in-flight records on rebalance and stop.

A broker that does not answer a long-poll fetch as soon as data arrives (the embedded Tansu broker) would
otherwise add up to 1.5 s to every query round trip. faust waits for every in-flight record to be
acknowledged before it gives partitions up, without a bound; a record that never will be (seen after repeated
SIGKILLs) froze a worker in a rebalance. Giving up after a while is safe: only acknowledged, contiguous offsets
are ever committed, so what is still in flight is re-delivered and applied idempotently. Registered as the
`gristmill://` broker scheme through the `faust.transports` entry point.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

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


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_empty(self) -> None:
        """faust's wait for in-flight records, for at most the app's `in_flight_wait_s`."""
        limit = getattr(self.app, "in_flight_wait_s", None)
        try:
            await asyncio.wait_for(super().wait_empty(), limit)
        except TimeoutError:
            self.log.warning("gave up waiting for %d in-flight records after %.0fs: they stay uncommitted and "
                             "will be re-delivered", len(self._unacked_messages), limit)
            await self.commit_and_end_transactions()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
