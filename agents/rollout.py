"""Rollout agent: `model-updates` (promoted or rolled_back) -> re-embed the index into the version's collection
while the current pair serves -> switch atomically. Workers that did not get the record follow the registry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from schemas import ModelUpdate
from streams.host import AgentHost
from streams.ml.rollout import roll_out
from streams.ml.serving import ServingSlot
from streams.processing import Contract
from streams.state.errors import ExperimentConflict
from streams.state.evaluation_store import LIVE_STATES, EvaluationStore, ExperimentRecord
from streams.store_threads import WriteAborted
from streams.validation import Accepted

MODEL_UPDATES = Contract("model-updates", ModelUpdate, None)
Roll = Callable[[str], Awaitable[object]]  # `roll_out` of a version, with its dependencies bound
log = logging.getLogger(__name__)


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    rollout = partial(roll_out, shared.serving, write=shared.threads.write, step_documents=s.rollout_step_documents)
    worker.batch_agent(MODEL_UPDATES, "rollout", 1, 1.0, partial(apply_updates, serving=shared.serving,
                                                                 roll=rollout, model_key=s.model_name.encode(),
                                                                 experiments=shared.evaluation))
    worker.timer(2.0, partial(follow_registry, serving=shared.serving, roll=rollout))


def outdated(update: ModelUpdate, serving: ServingSlot) -> bool:
    """Decided before the serving version was made current (e.g. history replayed to a new worker)."""
    served_since = max((at for version, at in serving.registry.history()
                        if version == serving.current.model.version), default=0.0)
    return update.at is not None and update.at.timestamp() <= served_since


async def apply_updates(batch: Sequence[Accepted[ModelUpdate]], *, serving: ServingSlot, roll: Roll,
                        model_key: bytes, experiments: EvaluationStore | None = None) -> None:
    """Record experiments started and ended; roll out each promotion or rollback of this model that is not
    already serving nor outdated."""
    for accepted in batch:
        update = accepted.record
        if accepted.message.key != model_key:
            continue
        if experiments is not None and update.experiment is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, record_experiment, experiments, model_key.decode(), update, serving.current.model.version)
        if update.status not in ("promoted", "rolled_back"):
            continue
        if update.version == serving.current.model.version or outdated(update, serving):
            continue
        try:
            await roll(update.version)
        except WriteAborted:
            raise  # stopping: the record is re-delivered and the rollout resumes
        except Exception:
            log.exception("rollout of %s failed; %s keeps serving", update.version, serving.current.model.version)


def record_experiment(store: EvaluationStore, model: str, update: ModelUpdate, serving_version: str) -> None:
    """An experiment's start (one at a time: a second is refused and logged) or its end by an operator or a
    decision (a decision already moved it: then this changes nothing)."""
    spec = update.experiment
    assert spec is not None
    at = update.at.timestamp() if update.at is not None else time.time()
    if update.status == "experiment":
        try:
            store.start_experiment(ExperimentRecord(spec.id, model, update.version, serving_version, spec.mode,
                                                    spec.fraction, "building", at))
        except ExperimentConflict as exc:
            if not any(e.id == spec.id for e in store.experiments(model)):  # not a re-delivery of this start
                log.warning("experiment %s refused: %s", spec.id, exc)
    elif update.status == "stopped":
        store.transition(spec.id, LIVE_STATES, "stopped", decision="stop", reason=update.reason, ended=True,
                         evidence=dict(update.metrics) or None)
    elif update.status == "promoted":
        store.transition(spec.id, LIVE_STATES, "promoted", decision="promote", reason=update.reason, ended=True,
                         evidence=dict(update.metrics) or None)
    elif update.status == "rolled_back":
        store.transition(spec.id, ("promoted",), "rolled_back", decision="rollback", reason=update.reason,
                         ended=True)


async def follow_registry(*, serving: ServingSlot, roll: Roll) -> None:
    """Another worker switched (shared registry and Qdrant server): catch up and switch too."""
    current = serving.registry.current()
    if current is None or current.version == serving.current.model.version or serving.rolling.locked():
        return
    last = serving.rollout
    if last is not None and last.version == current.version and last.state == "failed":
        return  # that rollout failed (its reason is on /health); an operator's promotion or rollback retries it
    try:
        await roll(current.version)
    except WriteAborted:
        raise
    except Exception:
        log.exception("following the registry to %s failed; %s keeps serving", current.version,
                      serving.current.model.version)
