"""The way every batch of raw Kafka messages is processed, apart from Kafka itself: the topic's contract, the
validation gate, dead letters, and the agent's handler; what comes out goes through an `Outbox`.

A record's failure is that record's alone: when the handler raises for a batch, the batch is bisected until the
record that fails alone is found; it becomes a dead letter with the reason and the exception type, and every other
record of the batch is applied (handlers are idempotent, so applying a half again is harmless). Only `Unfinished`
(the worker stops while the store or the broker is unavailable) and cancellation stop a batch as a whole: it is
withheld and re-delivered.

The faust agents (`streams.app`) and the in-process harness (`streams.devtools.harness`) both run batches through
`BatchRunner`, so a unit test of a handler exercises exactly what a worker does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from schemas import DeadLetter, Record
from streams import metrics
from streams.errors import RecordTooLarge, Unfinished
from streams.state.errors import OperationAborted
from streams.validation import Accepted, RawMessage, Rejected, failed, validate_message

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Contract(Generic[R]):
    """A public topic (logical name), the record its values must be, and the field its keys must equal. `consumes`
    names a topic outside gristmill's namespace read instead (a source's); `topic` then labels it."""

    topic: str
    model: type[R]
    key_field: str | None
    consumes: str | None = None

    async def prepare(self, messages: Sequence[RawMessage]) -> None:
        """Fetch what checking `messages` needs from elsewhere (a source's schemas), before they are checked."""

    def check(self, message: RawMessage) -> Accepted[R] | Rejected | None:
        """The record, or why it is a dead letter; None: skipped quietly (nothing to apply, nothing wrong)."""
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
    """Writes rejects to `deadletter` (before offsets are committed) and keeps the latest for the dashboard.
    Every letter fits `max_bytes` (a prefix of an oversized value is kept), so sending one cannot fail for size."""

    def __init__(self, outbox: Outbox, max_bytes: int = 900_000, keep: int = 50) -> None:
        self.outbox = outbox
        self.max_bytes = max_bytes
        self.recent: deque[DeadLetter] = deque(maxlen=keep)

    async def send(self, rejected: Sequence[Rejected], logical_topic: str) -> None:
        if not rejected:
            return
        letters: list[tuple[bytes | None, DeadLetter]] = []
        for reject in rejected:
            metrics.RECORDS_INVALID.labels(logical_topic, reject.reason).inc()
            log.info("dead-lettered %s[%d]@%d: %s", reject.message.topic, reject.message.partition,
                     reject.message.offset, "; ".join(f"{e.loc}: {e.msg}"[:300] for e in reject.errors[:3]))
            key, letter = reject.dead_letter(self.max_bytes)
            self.recent.appendleft(letter)
            letters.append((key, letter))
        try:
            await self.outbox.publish_many("deadletter", letters)
        except RecordTooLarge:  # a producer limit below the configured one: keep reasons and a short prefix
            log.error("dead letters over the producer's limit; sending them with 64 KiB of each value")
            await self.outbox.publish_many("deadletter", [r.dead_letter(64 * 1024) for r in rejected])
        metrics.DEADLETTERS_OUT.labels(logical_topic).inc(len(rejected))


@dataclass
class AgentHealth:
    """Per agent: crashes (an exception escaped its batch loop) and when its latest batch completed. An agent whose
    latest crash is more recent than its latest completed batch is crash-looping: `/health` says `degraded`."""

    crashes: dict[str, int] = field(default_factory=dict)
    last_crash: dict[str, float] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)
    last_batch: dict[str, float] = field(default_factory=dict)

    def batch_done(self, agent: str) -> None:
        self.last_batch[agent] = time.time()

    def crashed(self, agent: str, exc: BaseException) -> None:
        self.crashes[agent] = self.crashes.get(agent, 0) + 1
        self.last_crash[agent] = time.time()
        self.last_error[agent] = f"{type(exc).__name__}: {exc}"[:500]
        metrics.AGENT_CRASHES.labels(agent).inc()

    def degraded(self) -> list[str]:
        return sorted(agent for agent, at in self.last_crash.items() if at >= self.last_batch.get(agent, 0.0))

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {agent: {"crashes": self.crashes.get(agent, 0), "last_crash": self.last_crash.get(agent),
                        "last_error": self.last_error.get(agent), "last_batch": self.last_batch.get(agent)}
                for agent in sorted(self.crashes.keys() | self.last_batch.keys())}


#: An agent's handler: the accepted records of one batch, in offset order per partition.
Handler = Callable[[Sequence[Accepted[R]]], Awaitable[None]]
#: Called with the record that failed alone (and why) before it becomes a dead letter: undo what it half did.
FailureHook = Callable[[Accepted[R], BaseException], Awaitable[None]]


class BatchRunner(Generic[R]):
    """One agent's batches: count and validate every message, dead-letter the rejects, hand the rest over; a record
    that makes the handler fail is found by bisection and dead-lettered alone."""

    def __init__(self, contract: Contract[R], name: str, handler: Handler[R], dead_letters: DeadLetterSink,
                 health: AgentHealth | None = None, on_failure: FailureHook[R] | None = None) -> None:
        self.contract = contract
        self.name = name
        self.handler = handler
        self.on_failure = on_failure
        self.dead_letters = dead_letters
        self.health = health or AgentHealth()

    async def run(self, messages: Sequence[RawMessage]) -> None:
        """Process one batch; returns when every effect of it (writes, records out, dead letters) is done.
        Raises only `Unfinished`, `OperationAborted` (the worker stops) or `CancelledError`: then nothing of the
        batch may be committed."""
        accepted = await self.admit(messages)
        if accepted:
            await self._isolate(accepted)
        self.health.batch_done(self.name)

    async def _isolate(self, batch: Sequence[Accepted[R]]) -> None:
        try:
            await self.handler(batch)
        except (Unfinished, OperationAborted, asyncio.CancelledError):
            raise
        except Exception as exc:
            if len(batch) == 1:
                log.warning("%s: %s[%d]@%d failed: %s: %s", self.name, batch[0].message.topic,
                            batch[0].message.partition, batch[0].message.offset, type(exc).__name__, exc)
                metrics.RECORDS_FAILED.labels(self.contract.topic, type(exc).__name__).inc()
                if self.on_failure is not None:
                    await self.on_failure(batch[0], exc)
                await self.dead_letters.send([failed(batch[0].message, exc)], self.contract.topic)
                return
            half = len(batch) // 2  # each half in offset order; applying one again is harmless
            await self._isolate(batch[:half])
            await self._isolate(batch[half:])

    async def admit(self, messages: Sequence[RawMessage]) -> list[Accepted[R]]:
        """The validation gate: count the batch, dead-letter the rejects (delivered before this returns)."""
        await self.contract.prepare(messages)
        started = time.perf_counter()
        checked = [self.contract.check(m) for m in messages]
        if self.contract.topic == "documents":
            metrics.STAGE_SECONDS.labels("validate").inc(time.perf_counter() - started)
        accepted = [c for c in checked if isinstance(c, Accepted)]
        metrics.RECORDS_IN.labels(self.contract.topic).inc(len(checked))
        metrics.RECORDS_VALID.labels(self.contract.topic).inc(len(accepted))
        await self.dead_letters.send([c for c in checked if isinstance(c, Rejected)], self.contract.topic)
        return accepted

