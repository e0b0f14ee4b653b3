"""Ingest agent: `documents` -> validate -> chunk -> embed -> upsert into the index (offsets after the write); each
configured source topic -> map to document events -> the same index writes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from schemas import DocumentEvent, FieldError
from streams import metrics
from streams.host import AgentHost
from streams.ml.indexer import IndexOutcome
from streams.ml.serving import ServingSlot
from streams.processing import Contract, DeadLetterSink
from streams.sources.mapper import SourceContract
from streams.sources.ordering import refusals
from streams.store_threads import StoreThreads
from streams.validation import Accepted

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
    records = [a.record for a in batch]
    outcome = await threads.write(lambda: serving.apply_documents(records), "index write")
    await applied(batch, outcome, announce)


async def index_source(batch: Sequence[Accepted[DocumentEvent]], *, source: SourceContract, serving: ServingSlot,
                       threads: StoreThreads, dead_letters: DeadLetterSink, announce: Announce | None = None) -> None:
    """A source's document events, held to its version rules (`refusals`) against the index in the same writer
    call that applies the rest; the refused become dead letters once the rest is written."""
    name = source.topic.removeprefix("source:")

    def write() -> tuple[IndexOutcome | None, dict[int, str]]:
        records = [a.record for a in batch]
        refused = refusals(name, records, serving.current.store.get_documents(list({r.doc_id for r in records})))
        fresh = [r for i, r in enumerate(records) if i not in refused]
        return (serving.apply_documents(fresh) if fresh else None), refused

    outcome, refused = await threads.write(write, "index write")
    if outcome is not None:
        await applied([a for i, a in enumerate(batch) if i not in refused], outcome, announce)
    await dead_letters.send([source.rejected(batch[i].message, (FieldError(loc="version", msg=f"source {name}: "
                                                                           f"{why}"),), mapped=True)
                             for i, why in refused.items()], source.topic)


async def applied(batch: Sequence[Accepted[DocumentEvent]], outcome: IndexOutcome,
                  announce: Announce | None) -> None:
    """Observe an applied batch; announce rewritten or deleted chunks to the other workers."""
    metrics.BATCH_RECORDS.labels("ingest").observe(len(batch))
    if outcome.replaced and announce is not None:
        await announce([a.record.doc_id for a in batch])
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
