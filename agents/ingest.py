"""Ingest agent: `documents` -> validate -> chunk -> embed -> upsert into the index (offsets after the write); each
configured source topic -> map to document events -> the same index writes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from schemas import DocumentEvent, FieldError
from streams import metrics
from streams.host import AgentHost
from streams.ml.serving import ServingSlot
from streams.processing import Contract, DeadLetterSink
from streams.sources.mapper import SourceContract
from streams.store_threads import StoreThreads
from streams.validation import Accepted, Rejected

DOCUMENTS = Contract("documents", DocumentEvent, "doc_id")
Announce = Callable[[Sequence[str]], Awaitable[None]]  # `IndexChanges.announce` with the outbox bound


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    changes = partial(shared.index_changes.announce, worker.outbox)
    worker.batch_agent(DOCUMENTS, "ingest", s.ingest_batch_records, s.ingest_batch_seconds,
                       partial(index, serving=shared.serving, threads=shared.threads, announce=changes),
                       on_failure=partial(restore, serving=shared.serving, threads=shared.threads, announce=changes))
    for source in shared.sources:
        worker.batch_agent(source, f"ingest-{source.topic.removeprefix('source:')}", s.ingest_batch_records,
                           s.ingest_batch_seconds,
                           partial(index_source, source=source, serving=shared.serving, threads=shared.threads,
                                   dead_letters=shared.dead_letters, announce=changes),
                           on_failure=partial(restore, serving=shared.serving, threads=shared.threads,
                                              announce=changes))
    if s.store_compact_interval_s:  # updates and deletes leave replaced points; the WAL needs flushes
        worker.timer(s.store_compact_interval_s, partial(compact, shared.serving, shared.threads,
                                                         s.store_compact_interval_s))


async def index(batch: Sequence[Accepted[DocumentEvent]], *, serving: ServingSlot, threads: StoreThreads,
                announce: Announce | None = None) -> None:
    """Apply a batch of document events to the serving index, on the writer thread, and observe it; when indexed
    chunks were rewritten or deleted, tell the other workers (their cached answers may show them)."""
    metrics.BATCH_RECORDS.labels("ingest").observe(len(batch))
    records = [a.record for a in batch]
    outcome = await threads.write(lambda: serving.apply_documents(records), "index write")
    if outcome.replaced and announce is not None:
        await announce([r.doc_id for r in records])
    now = time.time()
    for accepted in batch:
        if accepted.message.timestamp:
            metrics.FRESHNESS_SECONDS.observe(max(0.0, now - accepted.message.timestamp))
    for stage, seconds in outcome.stages.items():
        metrics.STAGE_SECONDS.labels(stage).inc(seconds)
    metrics.ENCODE_SECONDS.labels("ingest").observe(outcome.encode_s)
    metrics.STORE_WRITE_SECONDS.observe(outcome.write_s)
    metrics.CHUNKS_UPSERTED.inc(outcome.chunks)
    for kind in ("embedded", "deleted", "unchanged", "stale"):
        metrics.DOCS_APPLIED.labels(kind).inc(getattr(outcome, kind))


async def index_source(batch: Sequence[Accepted[DocumentEvent]], *, source: SourceContract, serving: ServingSlot,
                       threads: StoreThreads, dead_letters: DeadLetterSink, announce: Announce | None = None) -> None:
    """A source's document events: those older than what the index holds are dead letters (a source's versions
    must grow per row; an equal one is a re-delivery, applied as a no-op), the rest are indexed."""
    ids = list({a.record.doc_id for a in batch})
    ledger = await threads.write(lambda: serving.current.store.get_documents(ids), "reading versions")
    older = [a for a in batch if (held := ledger.get(a.record.doc_id)) is not None and a.record.version < held.version]
    if older:
        source.counts.deadlettered += len(older)
        await dead_letters.send([Rejected(a.message, (FieldError(
            loc="version", msg=f"{source.topic}: version {a.record.version} does not grow: the index holds "
                               f"{ledger[a.record.doc_id].version} for {a.record.doc_id!r}"),)) for a in older],
            source.topic)
    stale = {id(a) for a in older}
    if fresh := [a for a in batch if id(a) not in stale]:
        await index(fresh, serving=serving, threads=threads, announce=announce)


async def restore(failed: Accepted[DocumentEvent], exc: BaseException, *, serving: ServingSlot,
                  threads: StoreThreads, announce: Announce | None = None) -> None:
    """A document whose write failed half-way: its chunks back to what its ledger entry says."""
    doc_id = failed.record.doc_id
    await threads.write(lambda: serving.restore_document(doc_id, failed.record),
                        f"restoring {doc_id!r} after a failed write")
    if announce is not None:
        await announce([doc_id])


async def compact(serving: ServingSlot, threads: StoreThreads, interval_s: float) -> None:
    await threads.compact(serving.current.store, interval_s)
