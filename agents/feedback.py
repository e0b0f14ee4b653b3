"""Feedback agent: `feedback` -> validate -> join with the logged query/response -> training pairs -> `retrain`
when the policy fires. Feedback that arrives before its response waits (durably) for `feedback_hold_s`.

Every read and write of the feedback state goes through the store threads: a store that fails (a locked SQLite
file, a database away) pauses the agent and is retried; nothing is dead-lettered for it. Several workers share the
hold: each settles only what it claimed, so a record becomes one dead letter, not one per worker.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from schemas import FeedbackEvent
from streams import metrics
from streams.errors import Unfinished
from streams.host import AgentHost
from streams.ml.pairing import FeedbackJoin, PendingRetrain, RetrainPolicy
from streams.ml.serving import ServingSlot
from streams.processing import Contract, DeadLetterSink, Outbox, publish
from streams.state.evaluation_store import EvaluationStore, JudgementRecord
from streams.state.training_pairs import PendingFeedback, TrainingPairs
from streams.store_threads import StoreThreads
from streams.validation import Accepted, RawMessage, Rejected

FEEDBACK = Contract("feedback", FeedbackEvent, "query_id")
Settle = Callable[..., Awaitable[None]]  # `settle` with its dependencies bound


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    join = FeedbackJoin(shared.pairs, shared.query_log, partial(document_text, shared.serving), s.feedback_hold_s)
    policy = RetrainPolicy(shared.pairs, s.retrain_every_positive_pairs, s.retrain_min_interval_s,
                           s.retrain_schedule_s)
    settle_held = partial(settle, join=join, policy=policy, threads=shared.threads, claim_s=s.feedback_claim_s,
                          dead_letters=shared.dead_letters, outbox=worker.outbox, model_key=s.model_name.encode(),
                          evaluation=shared.evaluation)
    worker.batch_agent(FEEDBACK, "feedback", 64, 0.2, partial(receive, pairs=shared.pairs, settle=settle_held,
                                                              threads=shared.threads))
    worker.timer(1.0, partial(retry_held, pairs=shared.pairs, threads=shared.threads, settle=settle_held))
    worker.timer(600.0, partial(prune_pairs, pairs=shared.pairs, threads=shared.threads, max_rows=s.pairs_max_rows,
                                max_age_s=s.pairs_max_age_s))


def document_text(serving: ServingSlot, doc_id: str) -> str | None:
    """The first chunk of an indexed document (feedback on a document that was not served)."""
    chunks = serving.current.store.chunks(doc_id)
    return chunks[0].text if chunks else None


async def receive(batch: Sequence[Accepted[FeedbackEvent]], *, pairs: TrainingPairs, settle: Settle,
                  threads: StoreThreads) -> None:
    """Hold the batch durably (before it is acknowledged), then settle what can be settled."""
    now = time.time()
    held = [PendingFeedback(a.message.topic, a.message.partition, a.message.offset, a.message.key,
                            a.message.value or b"", a.record.query_id, now) for a in batch]
    await threads.state(lambda: pairs.hold(held), "feedback hold")
    await settle(held)


async def retry_held(*, pairs: TrainingPairs, threads: StoreThreads, settle: Settle) -> None:
    """Every second: join held feedback whose response has been logged meanwhile, expire the rest; the schedule."""
    try:
        held = await threads.state(pairs.held, "feedback hold")
        await settle(held, tick=True)
    except Unfinished:
        return  # stopping while the state or the broker fails: the hold keeps everything for the next start


async def settle(held: Sequence[PendingFeedback], *, join: FeedbackJoin, policy: RetrainPolicy,
                 threads: StoreThreads, claim_s: float, dead_letters: DeadLetterSink, outbox: Outbox,
                 model_key: bytes, evaluation: EvaluationStore | None = None, tick: bool = False) -> None:
    """Claim `held` (what another worker settles now is left to it), join it (training pairs), judge the answers
    the accepted feedback is about in the evaluation store (joined to the arms that served them by query_id),
    dead-letter what can never be joined, then release it from the hold; emit a `retrain` when the policy fires.

    Refused feedback judges nothing. Both stores keep the latest judgement per (query, document) by the feedback's
    offset, so settling again after a crash (the hold still has it) or a re-delivery changes nothing."""
    # the clock is read inside each try: a claim retried through an outage leases from when it is taken
    token, claimed = await threads.state(lambda: join.pairs.claim(held, time.time(), claim_s), "feedback hold")
    outcome = await threads.state(lambda: join.settle(claimed, time.time()), "feedback join")
    if evaluation is not None and outcome.judged:
        judged = [JudgementRecord(j.query_id, j.doc_id, j.judgement, j.judged_at, j.topic, j.partition, j.offset)
                  for j in outcome.judged]
        await threads.state(lambda: evaluation.record_judgements(judged), "evaluation store")
    await dead_letters.send([Rejected(RawMessage(item.topic, item.partition, item.offset, item.key, item.value),
                                      (error,)) for item, error in outcome.refused], FEEDBACK.topic)

    def release() -> None:
        join.pairs.release(token, outcome.settled)
        join.pairs.unclaim(token, outcome.waiting)

    await threads.state(release, "feedback hold")
    metrics.TRAINING_PAIRS.labels("positive").inc(sum(p.kind == "positive" for p in outcome.pairs))
    metrics.TRAINING_PAIRS.labels("negative").inc(sum(p.kind == "negative" for p in outcome.pairs))
    if tick:
        metrics.FEEDBACK_WAITING.set(len(outcome.waiting))

    def decide() -> list[PendingRetrain]:
        fired = policy.after_new_pairs() if outcome.pairs else None
        if tick and fired is None:
            fired = policy.on_tick()
        return ([fired] if fired else []) + (policy.unpublished() if tick else [])

    for pending in await threads.state(decide, "retrain policy"):  # recorded first, so one worker fires ...
        await publish(outbox, "retrain", model_key, pending.request)
        await threads.state(lambda row=pending.row: policy.pairs.retrain_published(row), "retrain policy")
        metrics.RETRAIN_REQUESTS.labels(pending.request.reason).inc()  # ... and published, or again on a tick


async def prune_pairs(*, pairs: TrainingPairs, threads: StoreThreads, max_rows: int, max_age_s: float) -> None:
    """Keep the training pairs bounded by age and rows (each model's manifest keeps the lineage of its pairs)."""
    try:
        await threads.state(lambda: pairs.prune(max_rows, max_age_s, time.time()), "training pairs pruning")
    except Unfinished:
        return
