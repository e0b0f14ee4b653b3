"""The index of a trainer process on the embedded store: a copy of its own, kept from `documents`.

A trainer reads the serving index to build its training job (negatives, the held-out evaluation). With a Qdrant
server every process reads the one collection the workers write; with the embedded store each process has only
its own, and a trainer-only process (`GRISTMILL_AGENTS=trainer`) would train against an empty index. So such a
process reads `documents` outside the consumer group (every partition, from the beginning, no committed offsets)
and applies every valid record to its own store as the workers do; the rollout timer re-embeds that copy when the
registry moves. Records the workers dead-letter are skipped here (their dead letters are the workers' to write).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from mode import Service

from schemas import DocumentEvent
from streams.ml.serving import ServingSlot
from streams.settings import Settings
from streams.store_threads import StoreThreads, WriteAborted
from streams.topics import TopicNames, aiokafka_security
from streams.validation import Accepted, RawMessage, validate_message

log = logging.getLogger(__name__)


def valid_documents(messages: Sequence[RawMessage]) -> list[DocumentEvent]:
    """The document events among `messages` that the ingest agent would apply, in order."""
    return [checked.record for checked in (validate_message(m, DocumentEvent, "doc_id") for m in messages)
            if isinstance(checked, Accepted)]


class IndexReplica(Service):
    """Applies every `documents` record to this process's serving index, for as long as the process runs."""

    def __init__(self, settings: Settings, serving: ServingSlot, threads: StoreThreads, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.serving = serving
        self.threads = threads
        self.caught_up = False  # read to the end of every partition once since the start (a fetch came back empty)
        self._consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            TopicNames(self.settings.namespace)["documents"], bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.settings.ingest_batch_records, **aiokafka_security(self.settings))
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self.should_stop:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                log.warning("documents not read for the index copy, retrying: %r", exc)
                await self.sleep(1.0)
                continue
            if not batches and not self.caught_up:
                log.info("the index copy has read documents to the end: %d documents",
                         await self.threads.read(self.serving.current.store.count_documents, "index copy count"))
                self.caught_up = True
            for partition, records in batches.items():
                messages = [RawMessage(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
                try:
                    await self.apply(valid_documents(messages))
                except WriteAborted:
                    return  # the process stops; it reads from the beginning again at its next start
                except asyncio.CancelledError:
                    raise
                log.debug("index copy applied %s up to offset %d", partition, records[-1].offset)

    async def apply(self, events: list[DocumentEvent]) -> None:
        """Apply a batch on the writer thread (store outages are retried there); a batch that fails otherwise is
        applied record by record, and a record that fails alone is skipped."""
        if not events:
            return
        try:
            await self.threads.write(lambda: self.serving.apply_documents(events), "index copy write")
            return
        except WriteAborted:
            raise
        except Exception:
            if len(events) == 1:  # as the ingest agent does: its chunks back to what its ledger entry says
                failed = events[0]
                log.warning("document %r not applied to the index copy", failed.doc_id, exc_info=True)
                await self.threads.write(lambda: self.serving.restore_document(failed.doc_id, failed),
                                         f"restoring {failed.doc_id!r}")
                return
        for event in events:
            await self.apply([event])
