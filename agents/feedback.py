"""Feedback agent: `feedback` -> validate -> join with the logged query/response -> training pairs -> `retrain`
when the policy fires. Feedback that arrives before its response waits (durably) for `feedback_hold_s`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from schemas import FeedbackEvent, RetrainRequest
from streams import metrics
from streams.host import AgentHost
from streams.ml.pairing import FeedbackJoin, RetrainPolicy
from streams.ml.serving import ServingSlot
from streams.processing import Contract, DeadLetterSink, Outbox, publish
from streams.state.evaluation_store import EvaluationStore
from streams.state.training_pairs import PendingFeedback, TrainingPairs
from streams.validation import Accepted, RawMessage, Rejected

FEEDBACK = Contract("feedback", FeedbackEvent, "query_id")
Settle = Callable[..., Awaitable[None]]  # `settle` with its dependencies bound


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    join = FeedbackJoin(shared.pairs, shared.query_log, partial(document_text, shared.serving), s.feedback_hold_s)
    policy = RetrainPolicy(shared.pairs, s.retrain_every_positive_pairs, s.retrain_min_interval_s,
                           s.retrain_schedule_s)
    settle_held = partial(settle, join=join, policy=policy, lock=asyncio.Lock(), dead_letters=shared.dead_letters,
                          outbox=worker.outbox, model_key=s.model_name.encode())
    worker.batch_agent(FEEDBACK, "feedback", 64, 0.2, partial(receive, pairs=shared.pairs, settle=settle_held,
                                                              evaluation=shared.evaluation))
    worker.timer(1.0, partial(retry_held, pairs=shared.pairs, settle=settle_held))


def document_text(serving: ServingSlot, doc_id: str) -> str | None:
    """The first chunk of an indexed document (feedback on a document that was not served)."""
    chunks = serving.current.store.chunks(doc_id)
    return chunks[0].text if chunks else None


async def receive(batch: Sequence[Accepted[FeedbackEvent]], *, pairs: TrainingPairs, settle: Settle,
                  evaluation: EvaluationStore | None = None) -> None:
    """Hold the batch durably (before it is acknowledged), judge the answers it is about in the evaluation store
    (joined to the arms that served them by query_id), then join what can be joined into training pairs."""
    now = time.time()
    if evaluation is not None:
        judged = [(a.record.query_id, a.record.doc_id, a.record.judgement, now) for a in batch]
        await asyncio.get_running_loop().run_in_executor(None, evaluation.record_judgements, judged)
    held = [PendingFeedback(a.message.topic, a.message.partition, a.message.offset, a.message.key,
                            a.message.value or b"", a.record.query_id, now) for a in batch]
    pairs.hold(held)
    await settle(held)


async def retry_held(*, pairs: TrainingPairs, settle: Settle) -> None:
    """Every second: join held feedback whose response has been logged meanwhile, expire the rest; the schedule."""
    held = await asyncio.get_running_loop().run_in_executor(None, pairs.held)
    await settle(held, tick=True)


async def settle(held: Sequence[PendingFeedback], *, join: FeedbackJoin, policy: RetrainPolicy, lock: asyncio.Lock,
                 dead_letters: DeadLetterSink, outbox: Outbox, model_key: bytes, tick: bool = False) -> None:
    """Join `held` (those still held: the agent and the timer never settle the same feedback twice), dead-letter
    what can never be joined, and emit a `retrain` when the policy fires."""
    async with lock:
        pending = {(p.topic, p.partition, p.offset) for p in join.pairs.held()}
        held = [h for h in held if (h.topic, h.partition, h.offset) in pending]
        outcome = await asyncio.get_running_loop().run_in_executor(None, join.settle, held, time.time())
        await dead_letters.send([Rejected(RawMessage(item.topic, item.partition, item.offset, item.key, item.value),
                                          (error,)) for item, error in outcome.refused], FEEDBACK.topic)
    metrics.TRAINING_PAIRS.labels("positive").inc(sum(p.kind == "positive" for p in outcome.pairs))
    metrics.TRAINING_PAIRS.labels("negative").inc(sum(p.kind == "negative" for p in outcome.pairs))
    metrics.FEEDBACK_WAITING.set(outcome.waiting)
    request: RetrainRequest | None = policy.after_new_pairs() if outcome.pairs else None
    if tick and request is None:
        request = policy.on_tick()
    if request is not None:
        await publish(outbox, "retrain", model_key, request)
        metrics.RETRAIN_REQUESTS.labels(request.reason).inc()
