"""Index changes between workers: the worker that rewrote or deleted indexed documents says so on `index-changes`,
and every other worker drops its cached answers at once, so none serves a changed document from its cache.

Every worker reads the topic outside its consumer group (all partitions, no committed offsets): a change must
reach every worker, not one of them. Reading starts at the topic's beginning (it is kept for an hour), which only
drops caches that are still empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from mode import Service
from pydantic import ValidationError

from schemas import IndexChange
from streams import metrics
from streams.ml.serving import ServingSlot
from streams.processing import Outbox, publish
from streams.settings import Settings
from streams.topics import TopicNames, aiokafka_security

log = logging.getLogger(__name__)


class IndexChanges:
    """This worker's side of the broadcast: announce its own writes, apply the others'."""

    def __init__(self, worker_id: str, serving: ServingSlot) -> None:
        self.worker_id = worker_id
        self.serving = serving

    async def announce(self, outbox: Outbox, doc_ids: Sequence[str]) -> None:
        """Tell every other worker that these documents' indexed chunks changed (after the write)."""
        if not doc_ids:
            return
        change = IndexChange(worker=self.worker_id, index_version=self.serving.current.searcher.index_version,
                             doc_ids=list(dict.fromkeys(doc_ids))[:10_000], at=datetime.now(UTC))
        await publish(outbox, "index-changes", self.worker_id.encode(), change)

    def receive(self, change: IndexChange) -> bool:
        """Drop the cached answers of every pair this worker holds, unless the change is this worker's own."""
        if change.worker == self.worker_id:
            return False
        self.serving.invalidate_caches()
        metrics.CACHE_INVALIDATIONS.labels("remote").inc()
        return True


class IndexChangeListener(Service):
    """Reads `index-changes` for as long as the worker runs (a plain aiokafka consumer without a group)."""

    def __init__(self, settings: Settings, changes: IndexChanges, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.changes = changes
        self._consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            TopicNames(self.settings.namespace)["index-changes"], bootstrap_servers=self.settings.
            kafka_bootstrap_servers, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms * 10, **aiokafka_security(self.settings))
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _listen(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self.should_stop:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                log.warning("index changes not read, retrying: %r", exc)
                await self.sleep(1.0)
                continue
            except asyncio.CancelledError:
                raise
            for records in batches.values():
                for record in records:
                    try:
                        self.changes.receive(IndexChange.model_validate_json(record.value or b""))
                    except ValidationError as exc:
                        log.warning("an index-changes record at %d@%d is not one: %s", record.partition,
                                    record.offset, exc.errors()[0]["msg"])
