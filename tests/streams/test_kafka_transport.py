"""The bounded wait for in-flight records, driven through faust's own ack-waiting code."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer

from streams.kafka_transport import QuietWhileStopping, drain_in_flight


@dataclass(eq=False)
class InFlightRecord:
    acked: bool = False


@dataclass
class TrackingConsumer:
    """faust's in-flight bookkeeping (its `_wait_for_ack` and `_clean_unacked_messages`) around a plain set."""

    _unacked_messages: set[InFlightRecord] = field(default_factory=set)
    should_stop: bool = False
    commits: int = 0
    _waiting_for_ack: Any = None

    _wait_for_ack = FaustConsumer._wait_for_ack
    _clean_unacked_messages = FaustConsumer._clean_unacked_messages

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def commit(self) -> bool:
        self.commits += 1
        return True

    def ack(self, record: InFlightRecord) -> None:
        record.acked = True
        if self._waiting_for_ack is not None and not self._waiting_for_ack.done():
            self._waiting_for_ack.set_result(None)


@pytest.mark.timeout(30)  # an unbounded wait cannot even be cancelled: faust's `_wait_for_ack` swallows that
def test_a_record_that_is_never_acknowledged_stops_blocking_after_the_limit() -> None:
    consumer = TrackingConsumer({InFlightRecord(), InFlightRecord()})

    async def scenario() -> tuple[bool, float]:
        begun = time.monotonic()
        drained = await drain_in_flight(consumer, 0.5)
        return drained, time.monotonic() - begun

    drained, took = asyncio.run(scenario())
    assert not drained and 0.5 <= took < 2.5
    assert len(consumer._unacked_messages) == 2 and consumer.commits >= 1  # left in flight, nothing dropped


def test_records_acknowledged_in_time_are_drained() -> None:
    records = [InFlightRecord(), InFlightRecord()]
    consumer = TrackingConsumer(set(records))

    async def scenario() -> bool:
        async def finish_batch() -> None:
            await asyncio.sleep(0.2)
            for record in records:
                consumer.ack(record)

        acking = asyncio.create_task(finish_batch())
        drained = await drain_in_flight(consumer, 30)
        await acking
        return drained

    begun = time.monotonic()
    assert asyncio.run(scenario()) is True
    assert time.monotonic() - begun < 2 and not consumer._unacked_messages


def test_nothing_in_flight_returns_at_once_and_a_stopping_consumer_does_not_wait() -> None:
    assert asyncio.run(drain_in_flight(TrackingConsumer(), 0.1)) is True
    stopping = TrackingConsumer({InFlightRecord()}, should_stop=True)  # as faust: no wait once stopping
    assert asyncio.run(asyncio.wait_for(drain_in_flight(stopping, None), 5)) is True
    assert len(stopping._unacked_messages) == 1


def test_the_fetch_wait_stays_short_while_records_flow_and_grows_when_idle() -> None:
    from streams.kafka_transport import AdaptiveFetchWait

    wait = AdaptiveFetchWait(busy_ms=10, idle_ms=500, idle_after_s=1.0)
    assert wait.after_fetch(5, now=100.0) == 10
    assert wait.after_fetch(0, now=100.5) == 10  # a pause shorter than idle_after_s: still busy
    waits = [wait.after_fetch(0, now=101.0 + i) for i in range(8)]
    assert waits == [20, 40, 80, 160, 320, 500, 500, 500]
    assert wait.after_fetch(1, now=110.0) == 10  # the first record: short again at once


def test_aiokafka_errors_are_info_while_the_worker_stops_and_errors_otherwise(caplog: pytest.LogCaptureFixture
                                                                             ) -> None:
    stopping = [False]
    quiet = QuietWhileStopping(lambda: stopping[0]).install()
    logger = logging.getLogger("aiokafka.consumer.group_coordinator")
    try:
        with caplog.at_level(logging.INFO, logger="aiokafka"):
            logger.error("Error sending OffsetFetchRequest to node 1 [closed] -- marking coordinator dead")
            stopping[0] = True
            logger.error("Error sending OffsetFetchRequest to node 1 [closed] -- marking coordinator dead")
            logging.getLogger("aiokafka.consumer.consumer").error("Unexpected error in fetcher routine")
        assert [r.levelname for r in caplog.records] == ["ERROR", "INFO", "INFO"]  # a real outage stays an ERROR
    finally:
        quiet.uninstall()
