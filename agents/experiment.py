"""Experiment agent (timers): keep this worker's challenger as the live experiment says (built through the
blue/green rollout without a switch), end a live experiment that what serves superseded (its candidate serves, or
its baseline no longer does), decide running experiments against their guardrails and put each decision on
`model-updates`, and publish the online metrics as Prometheus gauges."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from functools import partial

from schemas import ExperimentSpec, ModelUpdate
from streams import metrics
from streams.answering import ActiveExperiment
from streams.host import AgentHost
from streams.ml.evaluation import summarize
from streams.ml.experiments import Decision, Guardrails, decide, end_superseded
from streams.ml.rollout import build_challenger
from streams.ml.serving import ServingSlot, Write
from streams.processing import Outbox, publish
from streams.settings import Settings
from streams.state.evaluation_store import EvaluationStore, ExperimentRecord
from streams.state.registry import ModelRegistry
from streams.store_threads import WriteAborted

log = logging.getLogger(__name__)
UPDATE_OF = {"promote": "promoted", "stop": "stopped", "rollback": "rolled_back"}
STATE_AFTER = {"promote": "promoted", "stop": "stopped", "rollback": "rolled_back", "finish": "finished"}


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    active = shared.answering.experiment
    worker.timer(2.0, partial(follow, serving=shared.serving, active=active, write=shared.threads.write,
                              step_documents=s.rollout_step_documents))
    worker.timer(s.experiment_check_s, partial(decide_live, settings=s, store=shared.evaluation, active=active,
                                               outbox=worker.outbox, registry=shared.registry))
    worker.timer(15.0, partial(publish_gauges, store=shared.evaluation, max_age_s=s.evaluation_max_age_s))


async def follow(*, serving: ServingSlot, active: ActiveExperiment, write: Write, step_documents: int) -> None:
    """Build the live experiment's challenger here (a worker restarted mid-experiment builds it again; the copy
    skips what its collection already holds), and let it go when the experiment ends."""
    loop = asyncio.get_running_loop()
    experiment = await loop.run_in_executor(None, active.refresh)
    # a promoted candidate stays attached until the rollout makes it serve (the switch lets it go)
    wanted = experiment.version if experiment is not None and (experiment.live or (
        experiment.state == "promoted" and serving.current.model.version != experiment.version)) else None
    challenger = serving.challenger
    if challenger is not None and challenger.model.version != wanted and not serving.rolling.locked():
        # (while a rollout runs, it may be making this very challenger serve: the switch lets it go then)
        released = await write(serving.detach_challenger, "experiment ended")
        if released is not None:
            serving.retire_later(released)  # searches in flight finish; a promotion reopens it at once
    if wanted is None or experiment is None or not experiment.live or serving.rolling.locked() or (
            serving.challenger is not None and serving.challenger.model.version == wanted):
        return
    if wanted == serving.current.model.version:
        return  # it serves: nothing to challenge with (the next check ends the experiment)
    try:
        await build_challenger(serving, wanted, write, step_documents, experiment.mode)
    except WriteAborted:
        raise
    except Exception as exc:  # a version that cannot be opened: the experiment cannot run
        log.exception("building the challenger %s failed", wanted)
        reason = f"challenger could not be built: {type(exc).__name__}: {exc}"
        await loop.run_in_executor(None, lambda: active.store.transition(
            experiment.id, ("building", "running"), "stopped", decision="stop", ended=True, reason=reason))
        return
    await loop.run_in_executor(None, lambda: active.store.transition(experiment.id, ("building",), "running"))
    await loop.run_in_executor(None, active.refresh)


async def decide_live(*, settings: Settings, store: EvaluationStore, active: ActiveExperiment,
                      outbox: Outbox, registry: ModelRegistry | None = None) -> None:
    """End the live experiment if what serves (the registry's pointer) superseded it, else decide it; the store's
    conditional transitions make one worker the one that ends or decides it."""
    loop = asyncio.get_running_loop()
    for decided in await loop.run_in_executor(None, store.unannounced, settings.model_name):
        await announce(decided, settings, store, outbox)  # taken before a stop, not yet published
    if registry is not None:
        def supersede() -> ExperimentRecord | None:
            return end_superseded(store, settings.model_name,
                                  lambda: None if (current := registry.current()) is None else current.version)

        ended = await loop.run_in_executor(None, supersede)
        if ended is not None:
            await loop.run_in_executor(None, active.refresh)
            metrics.EXPERIMENT_DECISIONS.labels("end").inc()
            log.info("experiment %s of %s ended: what serves changed outside it", ended.id, ended.version)
    experiment = await loop.run_in_executor(None, store.active, settings.model_name)
    metrics.EXPERIMENT_RUNNING.clear()
    if experiment is None or experiment.state == "building":
        return
    if experiment.state == "running":
        metrics.EXPERIMENT_RUNNING.labels(experiment.mode).set(1)

    def evaluate() -> tuple[Decision | None, dict[str, float]]:
        found = store.judged_answers(since=experiment.started_at)
        return decide(experiment, found.answers, found.judgements, Guardrails.of(settings))

    decision, evidence = await loop.run_in_executor(None, evaluate)
    watched = experiment.state == "promoted"  # keep the evidence of the promotion beside the watch's
    if decision is None:
        await loop.run_in_executor(None, lambda: store.transition(
            experiment.id, (experiment.state,), experiment.state,
            evidence={**experiment.evidence, **evidence} if watched else evidence))
        return
    kept = {**experiment.evidence, **decision.evidence} if watched else decision.evidence
    moved = await loop.run_in_executor(None, lambda: store.transition(
        experiment.id, (experiment.state,), STATE_AFTER[decision.action], decision=decision.action,
        reason=decision.reason, evidence=kept, ended=True, announce=decision.action in UPDATE_OF))
    if not moved:
        return  # another worker (or an operator) decided first
    await loop.run_in_executor(None, active.refresh)
    metrics.EXPERIMENT_DECISIONS.labels(decision.action).inc()
    log.info("experiment %s of %s: %s (%s)", experiment.id, experiment.version, decision.action, decision.reason)
    if decision.action in UPDATE_OF:
        decided = next(e for e in await loop.run_in_executor(None, store.experiments, settings.model_name)
                       if e.id == experiment.id)
        await announce(decided, settings, store, outbox)


async def announce(experiment: ExperimentRecord, settings: Settings, store: EvaluationStore, outbox: Outbox) -> None:
    """Publish a taken decision, then mark it published: a stop in between publishes it again on the next check
    (the rollout agent knows a decision it applied by its experiment id and status)."""
    action = experiment.decision or ""
    if action not in UPDATE_OF:
        await asyncio.get_running_loop().run_in_executor(None, store.announced, experiment.id)
        return
    await publish(outbox, "model-updates", settings.model_name.encode(),
                  decision_update(experiment, action, experiment.reason or "", experiment.evidence))
    metrics.MODEL_UPDATES.labels(UPDATE_OF[action]).inc()
    await asyncio.get_running_loop().run_in_executor(None, store.announced, experiment.id)


def decision_update(experiment: ExperimentRecord, action: str, reason: str, evidence: dict[str, float]
                    ) -> ModelUpdate:
    """The `model-updates` record of a decision: promoted (the candidate), stopped, or rolled back (to the
    version that served before), with the evidence as its metrics."""
    back = action == "rollback"
    return ModelUpdate(version=experiment.baseline if back else experiment.version, uri="",
                       status=UPDATE_OF[action],  # type: ignore[arg-type]
                       metrics=evidence, reason=f"experiment {experiment.id}: {reason}"[:2_000],
                       previous_version=experiment.version if back else experiment.baseline,
                       at=datetime.now(UTC),
                       experiment=ExperimentSpec(id=experiment.id, mode=experiment.mode,  # type: ignore[arg-type]
                                                 fraction=experiment.fraction))


async def publish_gauges(*, store: EvaluationStore, max_age_s: float, window_s: float = 3600.0) -> None:
    """Online metrics of the last hour per version and arm (slices: all, and the query length buckets: bounded
    labels); prunes answers older than `max_age_s`."""
    def compute() -> list[dict[str, object]]:
        now = time.time()
        store.prune(max_age_s, now)
        found = store.judged_answers(since=now - window_s, limit=50_000)
        rows = [{**row, "slice": "all"} for row in summarize(found.answers, found.judgements, ("version", "arm"))]
        return rows + summarize(found.answers, found.judgements, ("version", "arm", "slice"), slices=("length",))

    rows = await asyncio.get_running_loop().run_in_executor(None, compute)
    for gauge in (metrics.ONLINE_QUERIES, metrics.ONLINE_POSITIVE_RATE, metrics.ONLINE_MRR, metrics.ONLINE_NDCG,
                  metrics.ONLINE_LATENCY_P99):
        gauge.clear()
    for row in rows:
        labels = (str(row["version"]), str(row["arm"]), str(row["slice"]))
        metrics.ONLINE_QUERIES.labels(*labels).set(float(row["queries"]))  # type: ignore[arg-type]
        for gauge, key, scale in ((metrics.ONLINE_POSITIVE_RATE, "positive_rate", 1.0),
                                  (metrics.ONLINE_MRR, "mrr@10", 1.0), (metrics.ONLINE_NDCG, "ndcg@10", 1.0),
                                  (metrics.ONLINE_LATENCY_P99, "latency_p99_ms", 0.001)):
            if row.get(key) is not None:
                gauge.labels(*labels).set(float(row[key]) * scale)  # type: ignore[arg-type]
