"""Ingest agent: `documents` -> validate -> chunk -> embed -> upsert into the index (offsets after the write)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from faust.types import EventT

from agents.indexer import DocumentIndexer
from schemas import DocumentEvent
from streams import metrics
from streams.app import Pipeline, raw_message, withhold_acks
from streams.validation import Accepted, Rejected, validate_message

TOPIC = "documents"


def register(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    indexer = DocumentIndexer(pipeline.store, pipeline.encoder, pipeline.chunker)

    async def index(events: Sequence[EventT]) -> None:
        checked = [validate_message(raw_message(e), DocumentEvent, "doc_id") for e in events]
        accepted = [c for c in checked if isinstance(c, Accepted)]
        metrics.RECORDS_IN.labels(TOPIC).inc(len(checked))
        metrics.RECORDS_VALID.labels(TOPIC).inc(len(accepted))
        metrics.BATCH_RECORDS.labels("ingest").observe(len(checked))
        await pipeline.dead_letter([c for c in checked if isinstance(c, Rejected)], TOPIC)
        if not accepted:
            return
        records = [a.record for a in accepted]
        outcome = await pipeline.write(lambda: indexer.apply(records), "index write")
        now = time.time()
        for a in accepted:
            if a.message.timestamp:
                metrics.FRESHNESS_SECONDS.observe(max(0.0, now - a.message.timestamp))
        metrics.ENCODE_SECONDS.labels("ingest").observe(outcome.encode_s)
        metrics.STORE_WRITE_SECONDS.observe(outcome.write_s)
        metrics.CHUNKS_UPSERTED.inc(outcome.chunks)
        for kind in ("embedded", "deleted", "unchanged", "stale"):
            metrics.DOCS_APPLIED.labels(kind).inc(getattr(outcome, kind))

    @pipeline.app.agent(pipeline.topic(TOPIC), name="ingest")
    async def ingest(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(settings.ingest_batch_records, settings.ingest_batch_seconds):
            try:
                await index(events)
            except BaseException:
                withhold_acks(events)  # not indexed: these offsets must never be committed
                raise
