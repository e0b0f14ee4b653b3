"""Which of a source's document events the index must refuse: the version rules a source is held to.

A source's versions must grow per row. Against what the index holds (or an earlier event of the same batch): a
lower version, or an equal one that says something else, is refused (a dead letter); an equal one that says the
same is a re-delivery, applied as the no-op it is. A document another source (or the `documents` topic) wrote is
not a source's to change. Reasons name no document and no value: dead-letter reasons are shown to `read` keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas import DocumentEvent
from streams.ml.indexer import content_hash
from streams.state.store import DocumentState, readers_of


def _same(event: DocumentEvent, held: DocumentEvent | DocumentState) -> bool:
    """Whether `event` says what `held` (an earlier event, or the index's entry at the same version) says."""
    if isinstance(held, DocumentEvent):
        return event == held
    if event.op == "delete" or held.deleted:
        return event.op == "delete" and held.deleted
    return (content_hash(event) == held.content_hash and dict(event.metadata) == dict(held.metadata)
            and readers_of(event.acl) == readers_of(held.acl))


def refusals(source: str, events: Sequence[DocumentEvent], ledger: Mapping[str, DocumentState],
             truncated: int | None = None, redelivered: Sequence[bool] = ()) -> dict[int, str]:
    """Position in `events` (offset order per partition) -> why that event is refused (`truncated`: the version of
    the source's latest truncate; an event older than it belongs to the truncated table). An event `redelivered`
    (its record was processed before: at least once) that is older than what the index holds is no refusal: the
    index moved on past it, and the indexer ignores it as stale."""
    refused: dict[int, str] = {}
    newest: dict[str, DocumentEvent] = {}  # the latest event of each document this batch applies
    for i, event in enumerate(events):
        if truncated is not None and event.version < truncated:
            refused[i] = f"version {event.version} is older than the source's truncate at version {truncated}"
            continue
        indexed = ledger.get(event.doc_id)
        if indexed is not None and indexed.source != source:
            owner = f"source {indexed.source!r}" if indexed.source else "another writer"
            refused[i] = f"the document was written by {owner}, not this source: a source changes only its own"
            continue
        held: DocumentEvent | DocumentState | None = newest.get(event.doc_id, indexed)
        if held is not None and event.version < held.version:
            if not (i < len(redelivered) and redelivered[i]):
                refused[i] = (f"version {event.version} does not grow: the index holds version {held.version} (a "
                              "row's versions must grow)")
            continue
        if held is not None and event.version == held.version and not _same(event, held):
            refused[i] = (f"version {event.version} does not grow: the index holds that version with other "
                          "content (two changes of a row must not share a version)")
            continue
        newest[event.doc_id] = event
    return refused
