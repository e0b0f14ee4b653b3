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
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas import DocumentEvent
from streams import metrics
from streams.app import Pipeline, Serving
from streams.state.store import DocumentState

log = logging.getLogger(__name__)


def replay_event(state: DocumentState) -> DocumentEvent:
    """The document event that produces `state` in an empty collection."""
    if state.deleted:
        return DocumentEvent.model_construct(doc_id=state.doc_id, version=state.version, op="delete", text=None,
                                             title=None, source=None, metadata={}, updated_at=None)
    return DocumentEvent.model_construct(doc_id=state.doc_id, version=state.version, op="upsert", text=state.text,
                                         title=state.title, source=state.source, metadata=dict(state.metadata),
                                         updated_at=None)


def copy_documents(states: Sequence[DocumentState], target: Serving) -> int:
    """Bring `target` up to `states`; returns how many documents were (re-)embedded."""
    return target.indexer().apply([replay_event(s) for s in states]).embedded


@dataclass
class RolloutProgress:
    """What `gristmill status`, `/health` and the dashboard show about the latest rollout."""

    version: str
    previous: str
    state: str = "copying"  # copying, switched, failed
    documents: int = 0
    copied: int = 0
    embedded: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "progress": round(self.copied / self.documents, 4) if self.documents else 1.0}


async def roll_out(pipeline: Pipeline, version: str) -> RolloutProgress:
    """Make `version` serve, re-embedding the index into its collection first. Safe to call again after a crash."""
    async with pipeline.rolling:
        return await _roll_out(pipeline, version)


async def _roll_out(pipeline: Pipeline, version: str) -> RolloutProgress:
    loop = asyncio.get_running_loop()
    source = pipeline.serving
    progress = RolloutProgress(version, source.model.version)
    if version == source.model.version:
        progress.state, progress.finished_at = "switched", time.time()
        return progress
    pipeline.rollout = progress
    metrics.ROLLOUT_PROGRESS.set(0)
    model = pipeline.registry.get(version)
    target = await loop.run_in_executor(None, pipeline.open_serving, model)
    try:
        def snapshot() -> list[DocumentState]:
            pipeline.written_during_rollout = set()  # from here on, ingest remembers what it writes
            return source.store.all_documents()

        states = await pipeline.write(snapshot, "rollout snapshot")
        progress.documents = len(states)
        step = pipeline.settings.rollout_step_documents
        for start in range(0, len(states), step):
            batch = states[start:start + step]
            progress.embedded += await pipeline.write(lambda batch=batch: copy_documents(batch, target),
                                                      f"rollout copy to {version}")
            progress.copied += len(batch)
            metrics.ROLLOUT_PROGRESS.set(progress.copied / max(1, progress.documents))

        def switch() -> None:
            written = sorted(pipeline.written_during_rollout or ())
            pipeline.written_during_rollout = None
            progress.embedded += copy_documents(list(source.store.get_documents(written).values()), target)
            pipeline.serving = target  # the one assignment that switches model and index together
            pipeline.registry.promote(version)

        await pipeline.write(switch, f"rollout switch to {version}")
    except BaseException as exc:
        pipeline.written_during_rollout = None
        progress.state, progress.error = "failed", str(exc) or type(exc).__name__
        await loop.run_in_executor(None, target.close)
        raise
    progress.state, progress.finished_at = "switched", time.time()
    metrics.ROLLOUT_PROGRESS.set(1)
    metrics.ROLLOUT_SECONDS.observe(progress.finished_at - progress.started_at)
    pipeline.publish_model_info()
    log.info("serving %s (was %s): %d documents copied, %d re-embedded in %.1fs", version, source.model.version,
             progress.copied, progress.embedded, progress.finished_at - progress.started_at)
    pipeline.retire_later(source)  # in-flight searches on the old pair finish first
    return progress
