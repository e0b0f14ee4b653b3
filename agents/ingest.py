"""Ingest agent: `documents` -> validate -> chunk -> embed -> upsert into the index (offsets after the write)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from faust.types import EventT

from schemas import DocumentEvent
from streams import metrics
from streams.app import Pipeline

TOPIC = "documents"


def register(pipeline: Pipeline) -> None:
    settings = pipeline.settings

    async def index(events: Sequence[EventT]) -> None:
        metrics.BATCH_RECORDS.labels("ingest").observe(len(events))
        accepted = await pipeline.admit(events, TOPIC, DocumentEvent, "doc_id")
        if not accepted:
            return
        records = [a.record for a in accepted]
        outcome = await pipeline.write(lambda: pipeline.apply_documents(records), "index write")
        now = time.time()
        for a in accepted:
            if a.message.timestamp:
                metrics.FRESHNESS_SECONDS.observe(max(0.0, now - a.message.timestamp))
        metrics.ENCODE_SECONDS.labels("ingest").observe(outcome.encode_s)
        metrics.STORE_WRITE_SECONDS.observe(outcome.write_s)
        metrics.CHUNKS_UPSERTED.inc(outcome.chunks)
        for kind in ("embedded", "deleted", "unchanged", "stale"):
            metrics.DOCS_APPLIED.labels(kind).inc(getattr(outcome, kind))

    pipeline.batch_agent(TOPIC, "ingest", settings.ingest_batch_records, settings.ingest_batch_seconds, index)

    if settings.store_compact_interval_s:
        @pipeline.app.timer(settings.store_compact_interval_s)
        async def compact() -> None:  # updates and deletes leave replaced points; the WAL needs flushes
            await pipeline.compact_store()
