"""Trainer agent: `retrain` -> validate -> fine-tune a candidate in a child process -> evaluate -> register ->
`model-updates` (candidate, then promoted, rejected or failed). Serving is untouched until a rollout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from agents.ingest import compact
from agents.rollout import follow_registry
from schemas import ModelUpdate, RetrainRequest
from streams import metrics
from streams.host import AgentHost
from streams.ml.rollout import roll_out
from streams.ml.trainer import Trainer
from streams.processing import Contract, Outbox, publish
from streams.validation import Accepted

RETRAIN = Contract("retrain", RetrainRequest, None)
log = logging.getLogger(__name__)


def register(worker: AgentHost) -> None:
    shared = worker.shared
    worker.batch_agent(RETRAIN, "trainer", 1, 1.0, partial(train, trainer=shared.trainer, outbox=worker.outbox,
                                                          model_key=worker.settings.model_name.encode()))
    if worker.settings.keeps_index_copy:  # its own copy of the index follows the registry as a worker's does
        rollout = partial(roll_out, shared.serving, write=shared.threads.write,
                          step_documents=worker.settings.rollout_step_documents)
        worker.timer(2.0, partial(follow_registry, serving=shared.serving, roll=rollout))
        if worker.settings.store_compact_interval_s:  # vacuumed and flushed as the workers' index is
            worker.timer(worker.settings.store_compact_interval_s, partial(
                compact, shared.serving, shared.threads, worker.settings.store_compact_interval_s))


async def train(batch: Sequence[Accepted[RetrainRequest]], *, trainer: Trainer, outbox: Outbox,
                model_key: bytes) -> None:
    """Run each request of this model (keyed by its name); its decisions are published in order before the run is
    recorded as finished (a stop in between republishes them, see `Trainer.handle`)."""
    for accepted in batch:
        if accepted.message.key != model_key:
            log.info("retrain for another model (key %r) ignored", accepted.message.key)
            continue
        async def decided(updates: list[ModelUpdate]) -> None:
            for update in updates:
                await publish(outbox, "model-updates", model_key, update)
                metrics.MODEL_UPDATES.labels(update.status).inc()

        message = accepted.message
        await trainer.handle(accepted.record, f"{message.topic}/{message.partition}@{message.offset}", decided)
