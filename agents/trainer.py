"""Trainer agent: `retrain` -> validate -> fine-tune a candidate in a child process -> evaluate -> register ->
`model-updates` (candidate, then promoted, rejected or failed). Serving is untouched until a rollout."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from faust.types import EventT

from schemas import RetrainRequest
from streams import metrics
from streams.app import Pipeline, open_store
from streams.state.store import DocumentState
from streams.state.training_pairs import TrainingPairs
from streams.trainer import Trainer

TOPIC = "retrain"
log = logging.getLogger(__name__)


def register(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    pairs = pipeline.training_pairs or TrainingPairs(settings.pairs_path)  # shared with the feedback agent
    pipeline.training_pairs = pairs

    def documents() -> list[DocumentState]:
        """The ledger of the serving version's index (a trainer-only process does not roll out itself)."""
        current, serving = pipeline.registry.current(), pipeline.serving
        if current is None or current.version == serving.model.version:
            return serving.store.all_documents()
        store = open_store(settings, current.dim, current.version)
        try:
            return store.all_documents()
        finally:
            store.close()

    trainer = Trainer(settings, pipeline.registry, pairs, documents)
    pipeline.trainer = trainer
    updates = pipeline.topic("model-updates")
    model_key = settings.model_name.encode()

    async def train(events: Sequence[EventT]) -> None:
        for accepted in await pipeline.admit(events, TOPIC, RetrainRequest, None):
            if accepted.message.key != model_key:
                log.info("retrain for another model (key %r) ignored", accepted.message.key)
                continue
            for update in await trainer.handle(accepted.record):
                await (await updates.send(key=model_key, value=update.model_dump_json().encode()))
                metrics.MODEL_UPDATES.labels(update.status).inc()

    pipeline.batch_agent(TOPIC, "trainer", 1, 1.0, train)
