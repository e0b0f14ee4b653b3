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
from streams.sources.applying import apply_source_batch
from streams.sources.mapper import SourceContract, SourceTruncation
from streams.store_threads import StoreThreads
from streams.validation import Accepted, RawMessage, Rejected

DOCUMENTS = Contract("documents", DocumentEvent, "doc_id")
Announce = Callable[[Sequence[str]], Awaitable[None]]  # `IndexChanges.announce` with the outbox bound


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    changes = partial(shared.index_changes.announce, worker.outbox)
    worker.batch_agent(DOCUMENTS, "ingest", s.ingest_batch_records, s.ingest_batch_seconds,
                       partial(index, serving=shared.serving, threads=shared.threads, announce=changes,
                               reserved=frozenset(c.topic.removeprefix("source:") for c in shared.sources),
                               dead_letters=shared.dead_letters),
                       on_failure=partial(restore, serving=shared.serving, threads=shared.threads, announce=changes))
    for source in shared.sources:
        worker.batch_agent(source, f"ingest-{source.topic.removeprefix('source:')}", s.ingest_batch_records,
                           s.ingest_batch_seconds,
                           partial(index_source, source=source, serving=shared.serving, threads=shared.threads,
                                   dead_letters=shared.dead_letters, announce=changes),
                           on_failure=partial(restore_source, serving=shared.serving, threads=shared.threads,
                                              announce=changes))
    if s.store_compact_interval_s:  # updates and deletes leave replaced points; the WAL needs flushes
        worker.timer(s.store_compact_interval_s, partial(compact, shared.serving, shared.threads,
                                                         s.store_compact_interval_s))


async def index(batch: Sequence[Accepted[DocumentEvent]], *, serving: ServingSlot, threads: StoreThreads,
                announce: Announce | None = None, reserved: frozenset[str] = frozenset(),
                dead_letters: DeadLetterSink | None = None) -> None:
    """Apply a batch of document events to the serving index, on the writer thread, and observe it; when indexed
    chunks were rewritten or deleted, tell the other workers (their cached answers may show them). A `source` that
    names a configured source (`reserved`) is that source's alone: such an event is a dead letter."""
    if reserved and dead_letters is not None and (taken := [a for a in batch if a.record.source in reserved]):
        await dead_letters.send([Rejected(a.message, (FieldError(loc="source", msg=(
            f"source {a.record.source!r} is a configured source's name: only that source writes documents in it")),))
            for a in taken], "documents")
        batch = [a for a in batch if a.record.source not in reserved]
        if not batch:
            return
    records = [a.record for a in batch]
    outcome = await threads.write(lambda: serving.apply_documents(records), "index write")
    await applied(records, [a.message for a in batch], outcome, announce)


async def index_source(batch: Sequence[Accepted[DocumentEvent | SourceTruncation]], *, source: SourceContract,
                       serving: ServingSlot, threads: StoreThreads, dead_letters: DeadLetterSink,
                       announce: Announce | None = None) -> None:
    """A source's events applied in one writer call that holds them to the source's version rules against the index
    (`apply_source_batch`); the refused become dead letters once the rest is written."""
    name = source.topic.removeprefix("source:")
    records = [a.record for a in batch]
    offsets = [(a.message.partition, a.message.offset) for a in batch]
    done = await threads.write(lambda: apply_source_batch(serving, name, records, offsets), "index write")
    for events, positions, outcome in done.writes:
        await applied(events, [batch[i].message for i in dict.fromkeys(positions)], outcome, announce)
    await dead_letters.send([source.rejected(batch[i].message, (FieldError(loc="version", msg=f"source {name}: "
                                                                           f"{why}"),), mapped=True)
                             for i, why in done.refused.items()], source.topic)


async def applied(events: Sequence[DocumentEvent], messages: Sequence[RawMessage], outcome: IndexOutcome,
                  announce: Announce | None) -> None:
    """Observe applied events (from `messages`); announce rewritten or deleted chunks to the other workers."""
    metrics.BATCH_RECORDS.labels("ingest").observe(len(events))
    if outcome.replaced and announce is not None:
        await announce([event.doc_id for event in events])
    now = time.time()
    for message in messages:
        if message.timestamp:
            metrics.FRESHNESS_SECONDS.observe(max(0.0, now - message.timestamp))
    for stage, seconds in outcome.stages.items():
        metrics.STAGE_SECONDS.labels(stage).inc(seconds)
    metrics.ENCODE_SECONDS.labels("ingest").observe(outcome.encode_s)
    metrics.STORE_WRITE_SECONDS.observe(outcome.write_s)
    metrics.CHUNKS_UPSERTED.inc(outcome.chunks)
    metrics.CHUNKS_EMBEDDED.inc(outcome.encoded)
    metrics.EMBEDDING_CACHE_HITS.inc(outcome.cached)
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


async def restore_source(failed: Accepted[DocumentEvent | SourceTruncation], exc: BaseException, *,
                         serving: ServingSlot, threads: StoreThreads, announce: Announce | None = None) -> None:
    """A source's event whose write failed half-way: a document restored as from `documents`. A truncate is not
    undone: the slices of deletes it wrote stay written (each with its ledger entries), the slice that failed may
    have lost chunks its ledger still lists (a rollout or the next change of that row re-embeds it), and the dead
    letter says the truncate did not finish."""
    if isinstance(failed.record, DocumentEvent):
        await restore(failed, exc, serving=serving, threads=threads, announce=announce)  # type: ignore[arg-type]


async def compact(serving: ServingSlot, threads: StoreThreads, interval_s: float) -> None:
    await threads.compact(serving.current.store, interval_s)
