"""A source's batch applied to the serving index, on the store-writer thread: its version rules checked against the
index in the same call, its truncates in order with its other changes.

A truncate (`on_truncate: delete-all`) deletes the source's documents older than it, in slices that each write
their ledger entries, and leaves a watermark in the ledger (`truncated_id`): a later event of the source older than
the truncate (one from a partition that lags) is refused rather than resurrecting a row of the truncated table.
The ledger also keeps, per partition, the highest offset processed (`position_id`): a record at or below it is a
re-delivery (at least once, after a crash or a rebalance), and one older than the index is then ignored as stale
rather than dead-lettered as a version that did not grow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas import DocumentEvent
from streams.ml.indexer import IndexOutcome
from streams.ml.serving import ServingSlot
from streams.sources.mapper import SourceTruncation
from streams.sources.ordering import refusals
from streams.state.store import DocumentState

log = logging.getLogger(__name__)
TRUNCATE_SLICE = 256  # documents deleted per index write of a truncate


def truncated_id(source: str) -> str:
    """The ledger entry holding a source's latest truncate (a tombstone: never a document anyone reads)."""
    return f"~truncated:{source}"


def position_id(source: str, partition: int) -> str:
    """The ledger entry holding the highest offset of a source's partition processed so far (a tombstone): a record
    at or below it is a re-delivery."""
    return f"~position:{source}:{partition}"


@dataclass
class SourceWrite:
    """What a source's batch did: each index write with its events and the batch positions they came from, and the
    positions refused (with why)."""

    writes: list[tuple[list[DocumentEvent], list[int], IndexOutcome]] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


def apply_source_batch(serving: ServingSlot, source: str, records: Sequence[DocumentEvent | SourceTruncation],
                       offsets: Sequence[tuple[int, int]]) -> SourceWrite:
    """Apply `records` (offset order per partition; `offsets`: the partition and offset of each) to the serving
    index, then record how far each partition was processed; call it on the store-writer thread."""
    store = serving.current.store
    done = SourceWrite()
    pending: list[int] = []
    partitions = sorted({partition for partition, _ in offsets})
    marks = store.get_documents([position_id(source, p) for p in partitions])
    processed = {p: marks[position_id(source, p)].version for p in partitions if position_id(source, p) in marks}

    def apply(events: list[DocumentEvent], positions: list[int]) -> None:
        if events:
            done.writes.append((events, positions, serving.apply_documents(events)))

    def flush() -> None:
        events = [records[i] for i in pending]
        held = store.get_documents(list({e.doc_id for e in events} | {truncated_id(source)}))  # type: ignore[union-attr]
        mark = held.get(truncated_id(source))
        again = [offsets[i][1] <= processed.get(offsets[i][0], -1) for i in pending]
        found = refusals(source, events, held, mark.version if mark is not None else None,  # type: ignore[arg-type]
                         again)
        done.refused.update({pending[i]: why for i, why in found.items()})
        kept = [i for i in pending if i not in done.refused]
        apply([records[i] for i in kept], kept)  # type: ignore[misc]
        pending.clear()

    for i, record in enumerate(records):
        if not isinstance(record, SourceTruncation):
            pending.append(i)
            continue
        flush()
        gone = [s.doc_id for s in store.all_documents()
                if s.source == source and not s.deleted and s.version < record.version]
        log.warning("source %s: a truncate at version %d deletes %d documents", source, record.version, len(gone))
        for start in range(0, len(gone), TRUNCATE_SLICE):
            apply([DocumentEvent(doc_id=doc_id, version=record.version, op="delete", source=source)
                   for doc_id in gone[start:start + TRUNCATE_SLICE]], [i])
        apply([DocumentEvent(doc_id=truncated_id(source), version=record.version, op="delete", source=source)], [i])
    flush()
    highest: dict[int, int] = {}
    for partition, offset in offsets:
        highest[partition] = max(offset, highest.get(partition, -1))
    store.put_documents([DocumentState(position_id(source, p), offset, deleted=True, source=source)
                         for p, offset in highest.items() if offset > processed.get(p, -1)])
    return done
