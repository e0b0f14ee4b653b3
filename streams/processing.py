"""The way every batch of raw Kafka messages is processed, apart from Kafka itself: the topic's contract, the
validation gate, dead letters, and the agent's handler; what comes out goes through an `Outbox`.

The faust agents (`streams.app`) and the in-process harness (`streams.devtools.harness`) both run batches through
`BatchRunner`, so a unit test of a handler exercises exactly what a worker does.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from schemas import DeadLetter, Record
from streams import metrics
from streams.validation import Accepted, RawMessage, Rejected, validate_message

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Contract(Generic[R]):
    """A public topic (logical name), the record its values must be, and the field its keys must equal."""

    topic: str
    model: type[R]
    key_field: str | None

    def check(self, message: RawMessage) -> Accepted[R] | Rejected:
        return validate_message(message, self.model, self.key_field)


class Outbox(Protocol):
    """Where records go out: a Kafka producer in a worker, lists in the harness."""

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes | None, Record]]) -> None:
        """Produce records to a public topic (logical name); returns once the broker has every one."""
        ...


async def publish(outbox: Outbox, topic: str, key: bytes | None, record: Record) -> None:
    """Produce one record and wait until the broker has it."""
    await outbox.publish_many(topic, [(key, record)])


class DeadLetterSink:
    """Writes rejects to `deadletter` (before offsets are committed) and keeps the latest for the dashboard."""

    def __init__(self, outbox: Outbox, keep: int = 50) -> None:
        self.outbox = outbox
        self.recent: deque[DeadLetter] = deque(maxlen=keep)

    async def send(self, rejected: Sequence[Rejected], logical_topic: str) -> None:
        if not rejected:
            return
        letters: list[tuple[bytes | None, DeadLetter]] = []
        for reject in rejected:
            metrics.RECORDS_INVALID.labels(logical_topic, reject.reason).inc()
            log.info("dead-lettered %s[%d]@%d: %s", reject.message.topic, reject.message.partition,
                     reject.message.offset, "; ".join(f"{e.loc}: {e.msg}" for e in reject.errors))
            letter = reject.dead_letter()
            self.recent.appendleft(letter)
            letters.append((reject.message.key, letter))
        await self.outbox.publish_many("deadletter", letters)
        metrics.DEADLETTERS_OUT.labels(logical_topic).inc(len(rejected))


#: An agent's handler: the accepted records of one batch, in offset order per partition.
Handler = Callable[[Sequence[Accepted[R]]], Awaitable[None]]


class BatchRunner(Generic[R]):
    """One agent's batches: count and validate every message, dead-letter the rejects, hand the rest over."""

    def __init__(self, contract: Contract[R], name: str, handler: Handler[R], dead_letters: DeadLetterSink) -> None:
        self.contract = contract
        self.name = name
        self.handler = handler
        self.dead_letters = dead_letters

    async def run(self, messages: Sequence[RawMessage]) -> None:
        """Process one batch; returns when every effect of it (writes, records out) is done."""
        accepted = await self.admit(messages)
        if accepted:
            await self.handler(accepted)

    async def admit(self, messages: Sequence[RawMessage]) -> list[Accepted[R]]:
        """The validation gate: count the batch, dead-letter the rejects (delivered before this returns)."""
        checked = [self.contract.check(m) for m in messages]
        accepted = [c for c in checked if isinstance(c, Accepted)]
        metrics.RECORDS_IN.labels(self.contract.topic).inc(len(checked))
        metrics.RECORDS_VALID.labels(self.contract.topic).inc(len(accepted))
        await self.dead_letters.send([c for c in checked if isinstance(c, Rejected)], self.contract.topic)
        return accepted

