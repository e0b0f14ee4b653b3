"""Rollout agent: `model-updates` (promoted or rolled_back) -> re-embed the index into the version's collection
while the current pair serves -> switch atomically. Workers that did not get the record follow the registry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from schemas import ModelUpdate
from streams import metrics
from streams.host import AgentHost
from streams.ml.experiments import end_superseded, rolling_out
from streams.ml.rollout import roll_out
from streams.ml.serving import ServingSlot
from streams.processing import Contract
from streams.state.errors import ExperimentConflict, PointerMoved
from streams.state.evaluation_store import LIVE_STATES, EvaluationStore, ExperimentRecord
from streams.state.registry import ANY, LogPosition, ModelRegistry
from streams.store_threads import StoreThreads, WriteAborted
from streams.validation import Accepted

MODEL_UPDATES = Contract("model-updates", ModelUpdate, None)
Roll = Callable[..., Awaitable[object]]  # `roll_out` of a version (and its claim), with its dependencies bound
log = logging.getLogger(__name__)


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    rollout = partial(roll_out, shared.serving, write=shared.threads.write, step_documents=s.rollout_step_documents)
    worker.batch_agent(MODEL_UPDATES, "rollout", 1, 1.0, partial(apply_updates, serving=shared.serving,
                                                                 roll=rollout, model_key=s.model_name.encode(),
                                                                 experiments=shared.evaluation,
                                                                 threads=shared.threads))
    worker.timer(2.0, partial(follow_registry, serving=shared.serving, roll=rollout))


def decision_key(update: ModelUpdate) -> str | None:
    """What identifies a decision that may be published more than once (the trainer or the experiment agent
    publishes again a decision taken before a stop): the retrain request it answers or the experiment it ends,
    with its status."""
    request = update.trained_on.get("request")
    if isinstance(request, str):
        return f"{request}:{update.status}"
    return f"experiment:{update.experiment.id}:{update.status}" if update.experiment is not None else None


def refusal(update: ModelUpdate, position: LogPosition, registry: ModelRegistry) -> str | None:
    """Why this decision must not move the serving pointer, or None. Decisions are ordered by the log alone: one at
    or before the position of the decision that moved the pointer last was applied already (a replay), one that was
    applied under its key is a republication, and one made against another serving version than the one serving
    now (its `previous_version`) was overtaken by a later decision."""
    pointer = registry.pointer()
    if pointer is not None and pointer.position is not None and position <= pointer.position:
        return f"already decided: the pointer moved at {pointer.position.partition}@{pointer.position.offset}"
    key = decision_key(update)
    if key is not None and registry.applied(key):
        return f"decision {key} was applied before"
    serving = None if pointer is None else pointer.version
    if update.previous_version is not None and serving not in (update.previous_version, update.version):
        return f"decided against {update.previous_version}, but {serving} serves now"
    return None


async def apply_updates(batch: Sequence[Accepted[ModelUpdate]], *, serving: ServingSlot, roll: Roll,
                        model_key: bytes, experiments: EvaluationStore | None = None,
                        threads: StoreThreads | None = None) -> None:
    """Record experiments started and ended; roll out each promotion or rollback of this model that the log's order
    allows, moving the registry pointer by compare-and-set just before the switch. A refused decision is logged,
    counted and shown on `/health`."""
    loop = asyncio.get_running_loop()
    for accepted in batch:
        update = accepted.record
        if accepted.message.key != model_key:
            continue
        if experiments is not None and update.experiment is not None:
            def record(update: ModelUpdate = update) -> None:
                # what serves is the registry's pointer (this worker may still be catching up to it)
                pointer = serving.registry.current()
                record_experiment(experiments, model_key.decode(), update,
                                  pointer.version if pointer else serving.current.model.version, rolling_out(serving))
            await (threads.state(record, "evaluation store") if threads else loop.run_in_executor(None, record))
        if update.status not in ("promoted", "rolled_back"):
            continue
        position = LogPosition(accepted.message.partition, accepted.message.offset)
        why = await loop.run_in_executor(None, refusal, update, position, serving.registry)
        if why is not None:
            serving.refuse(update.version, update.status, why, position)
            continue
        try:
            await roll(update.version, claim=partial(
                serving.registry.promote, update.version, expected=update.previous_version or ANY,
                position=position, decision=decision_key(update)))
        except WriteAborted:
            raise  # stopping: the record is re-delivered and the rollout resumes
        except PointerMoved as exc:
            serving.refuse(update.version, update.status, str(exc), position)
        except Exception:
            log.exception("rollout of %s failed; %s keeps serving", update.version, serving.current.model.version)
        else:
            if experiments is not None:
                await end_experiment(experiments, model_key.decode(), update, threads)


async def end_experiment(store: EvaluationStore, model: str, update: ModelUpdate, threads: StoreThreads | None
                         ) -> None:
    """A decision made `update.version` serve: the live experiment it supersedes (its candidate serves now, or its
    baseline no longer does) ends, with the decision as its reason."""
    cause = f"{update.status}: {update.reason}" if update.reason else update.status

    def end() -> None:
        ended = end_superseded(store, model, update.version, cause)
        if ended is not None:
            metrics.EXPERIMENT_DECISIONS.labels("end").inc()
            log.info("experiment %s of %s ended: %s serves now (%s)", ended.id, ended.version, update.version, cause)

    await (threads.state(end, "evaluation store") if threads else asyncio.get_running_loop().run_in_executor(None, end))


def record_experiment(store: EvaluationStore, model: str, update: ModelUpdate, serving_version: str,
                      rolling: str | None = None) -> None:
    """An experiment's start (one at a time: a second is refused and logged; one of the serving version or of the
    version being rolled out is recorded as ended, with why) or its end by an operator or a decision (a decision
    already moved it: then this changes nothing)."""
    spec = update.experiment
    assert spec is not None
    at = update.at.timestamp() if update.at is not None else time.time()
    if update.status == "experiment" and update.version in (serving_version, rolling):
        why = "serves already" if update.version == serving_version else "is being rolled out to serve"
        if store.record_ended(ExperimentRecord(spec.id, model, update.version, serving_version, spec.mode,
                                               spec.fraction, "ended", at, ended_at=time.time(), decision="end",
                                               reason=f"refused: {update.version} {why}")):
            log.warning("experiment %s refused: %s %s", spec.id, update.version, why)
    elif update.status == "experiment":
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
    """Another worker switched (shared registry and Qdrant server): catch up and switch too, as long as the pointer
    still names that version when the copy is done (a follower never moves the pointer)."""
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
    except PointerMoved as exc:
        log.info("stopped following the registry to %s: %s", current.version, exc)
    except Exception:
        log.exception("following the registry to %s failed; %s keeps serving", current.version,
                      serving.current.model.version)
