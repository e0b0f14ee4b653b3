"""Blue/green rollout: re-embed the ledger into the collection of another model version while the current pair
keeps serving, then switch the serving (model, index) pair in one step.

Every step runs on the pipeline's store-writer thread, between ingest batches. Documents ingest writes while
the copy runs are remembered and re-applied in the final step, which also makes the switch, so no write is
lost and no search ever sees a model with an index built by another. Copying is idempotent (the indexer skips
versions a collection already holds), so an interrupted rollout resumes, and a rollback to a retired
collection only re-embeds what changed since it served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from schemas import DocumentEvent
from streams import metrics
from streams.ml.serving import RolloutProgress, Serving, ServingSlot, Write
from streams.state.errors import PointerMoved
from streams.state.store import DocumentState

log = logging.getLogger(__name__)


def replay_event(state: DocumentState) -> DocumentEvent:
    """The document event that produces `state` in an empty collection."""
    if state.deleted:
        return DocumentEvent.model_construct(doc_id=state.doc_id, version=state.version, op="delete", text=None,
                                             title=None, source=None, metadata={}, acl=state.acl,
                                             updated_at=None)
    return DocumentEvent.model_construct(doc_id=state.doc_id, version=state.version, op="upsert", text=state.text,
                                         title=state.title, source=state.source, metadata=dict(state.metadata),
                                         acl=state.acl, updated_at=None)


def copy_documents(states: Sequence[DocumentState], target: Serving) -> int:
    """Bring `target` up to `states` (acls a failed write narrowed included), dropping its cached answers when that
    changed what it holds (a retired pair brought back keeps its cache); returns how many documents were
    (re-)embedded."""
    outcome = target.indexer().apply([replay_event(s) for s in states], resync=True)
    if outcome.replaced:
        target.searcher.invalidate()
    return outcome.embedded


#: Called on the store-writer thread just before the switch; raising aborts it (nothing switches, the current pair
#: keeps serving). The worker applying a decision moves the registry pointer here (compare-and-set); a worker
#: following the registry checks that the pointer still names this version.
Claim = Callable[[], None]


def follow(slot: ServingSlot, version: str) -> Claim:
    """The claim of a worker following the registry: switch only while the pointer still names `version` (a slow
    follower never serves, nor writes, a version that a later decision replaced)."""
    def claim() -> None:
        pointer = slot.registry.pointer()
        if pointer is None or pointer.version != version:
            raise PointerMoved(version, version, None if pointer is None else pointer.version)
    return claim


async def roll_out(slot: ServingSlot, version: str, write: Write, step_documents: int = 64,
                   claim: Claim | None = None) -> RolloutProgress:
    """Make `version` serve, re-embedding the index into its collection first; `claim` (default: `follow`) runs
    just before the switch. Safe to call again after a crash."""
    async with slot.rolling:
        return await _copy_then(slot, version, write, step_documents, switch=True,
                                claim=claim or follow(slot, version))


async def build_challenger(slot: ServingSlot, version: str, write: Write, step_documents: int = 64,
                           mode: str = "split") -> RolloutProgress:
    """Build `version`'s collection exactly as a rollout does, then keep it beside the serving pair as the
    experiment's challenger (ingest writes to both from then on) instead of switching."""
    async with slot.rolling:
        return await _copy_then(slot, version, write, step_documents, switch=False, mode=mode)


async def _copy_then(slot: ServingSlot, version: str, write: Write, step_documents: int, switch: bool,
                     mode: str = "split", claim: Claim | None = None) -> RolloutProgress:
    loop = asyncio.get_running_loop()
    source = slot.current
    progress = RolloutProgress(version, source.model.version)
    if version == source.model.version:
        if claim is not None:
            await write(claim, f"rollout claim {version}")  # a decision for what serves here moves the pointer
        progress.state, progress.finished_at = "switched", time.time()
        return progress
    if switch:
        slot.rollout = progress
        metrics.ROLLOUT_PROGRESS.set(0)
    else:  # a challenger's build is not a rollout: its failure must not read as one
        slot.challenger_build = progress
    try:
        model = slot.registry.get(version)
        target = await loop.run_in_executor(None, slot.open if switch else lambda m: slot.open_challenger(m, mode),
                                            model)
    except BaseException as exc:  # an unknown version, an encoder or collection that cannot be opened
        progress.state, progress.error, progress.finished_at = "failed", f"{type(exc).__name__}: {exc}", time.time()
        raise
    try:
        def snapshot() -> list[DocumentState]:
            slot.written_during_rollout = set()  # from here on, ingest remembers what it writes
            return source.store.all_documents()

        states = await write(snapshot, "rollout snapshot")
        progress.documents = len(states)
        for start in range(0, len(states), step_documents):
            batch = states[start:start + step_documents]
            progress.embedded += await write(lambda batch=batch: copy_documents(batch, target),
                                             f"rollout copy to {version}")
            progress.copied += len(batch)
            if switch:
                metrics.ROLLOUT_PROGRESS.set(progress.copied / max(1, progress.documents))

        def finish() -> None:
            written = sorted(slot.written_during_rollout or ())
            slot.written_during_rollout = None
            progress.embedded += copy_documents(list(source.store.get_documents(written).values()), target)
            if switch:
                if claim is not None:
                    claim()  # the registry first: if it refuses or fails, nothing switched and `source` serves on
                slot.switch(target)  # the one assignment that switches model and index together
            else:
                slot.attach_challenger(target)  # from here on, every ingest write reaches both pairs

        await write(finish, f"rollout {'switch' if switch else 'challenger'} {version}")
    except BaseException as exc:
        slot.written_during_rollout = None
        # overtaken by another decision: not a failure (the version may be followed again later)
        progress.state = "abandoned" if isinstance(exc, PointerMoved) else "failed"
        progress.error = f"{type(exc).__name__}: {exc}"
        progress.finished_at = time.time()
        if not slot.in_use(target):  # not the experiment's challenger, nor sharing its collection
            await loop.run_in_executor(None, target.close)
        raise
    progress.state, progress.finished_at = ("switched" if switch else "challenging"), time.time()
    if not switch:
        log.info("%s challenges %s: %d documents copied, %d embedded in %.1fs", version, source.model.version,
                 progress.copied, progress.embedded, progress.finished_at - progress.started_at)
        return progress
    metrics.ROLLOUT_PROGRESS.set(1)
    metrics.ROLLOUT_SECONDS.observe(progress.finished_at - progress.started_at)
    slot.publish_model_info()
    log.info("serving %s (was %s): %d documents copied, %d re-embedded in %.1fs", version, source.model.version,
             progress.copied, progress.embedded, progress.finished_at - progress.started_at)
    slot.retire_later(source)  # in-flight searches on the old pair finish first
    return progress
