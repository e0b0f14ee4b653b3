"""Rollout agent: `model-updates` (promoted or rolled_back) -> re-embed the index into the version's collection
while the current pair serves -> switch atomically. Workers that did not get the record follow the registry."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from faust.types import EventT

from schemas import ModelUpdate
from streams.app import Pipeline, WriteAborted
from streams.rollout import roll_out

TOPIC = "model-updates"
log = logging.getLogger(__name__)


def register(pipeline: Pipeline) -> None:
    registry = pipeline.registry
    model_key = pipeline.settings.model_name.encode()

    def outdated(update: ModelUpdate) -> bool:
        """Decided before the serving version was made current (e.g. history replayed to a new worker)."""
        served_since = max((at for version, at in registry.history()
                            if version == pipeline.serving.model.version), default=0.0)
        return update.at is not None and update.at.timestamp() <= served_since

    async def apply(events: Sequence[EventT]) -> None:
        for accepted in await pipeline.admit(events, TOPIC, ModelUpdate, None):
            update = accepted.record
            if accepted.message.key != model_key or update.status not in ("promoted", "rolled_back"):
                continue
            if update.version == pipeline.serving.model.version or outdated(update):
                continue
            try:
                await roll_out(pipeline, update.version)
            except WriteAborted:
                raise  # stopping: the record is re-delivered and the rollout resumes
            except Exception:
                log.exception("rollout of %s failed; %s keeps serving", update.version,
                              pipeline.serving.model.version)

    pipeline.batch_agent(TOPIC, "rollout", 1, 1.0, apply)

    @pipeline.app.timer(2.0)
    async def follow_registry() -> None:
        """Another worker switched (shared registry and Qdrant server): catch up and switch too."""
        current = registry.current()
        if current is not None and current.version != pipeline.serving.model.version and not pipeline.rolling.locked():
            await roll_out(pipeline, current.version)
