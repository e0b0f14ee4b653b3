"""Feedback agent: `feedback` -> validate -> join with the logged query/response -> training pairs -> `retrain`
when the policy fires. Feedback that arrives before its response waits (durably) for `feedback_hold_s`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from faust.types import EventT

from agents.pairing import RetrainPolicy, pairs_from_feedback
from schemas import FeedbackEvent, FieldError, RetrainRequest
from streams import metrics
from streams.app import Pipeline
from streams.state.training_pairs import PendingFeedback, TrainingPair, TrainingPairs, pair_lineage
from streams.validation import RawMessage, Rejected

TOPIC = "feedback"


def register(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    store = TrainingPairs(settings.pairs_path)
    policy = RetrainPolicy(store, settings.retrain_every_positive_pairs, settings.retrain_min_interval_s,
                           settings.retrain_schedule_s)
    retrain = pipeline.topic("retrain")
    pipeline.training_pairs = store

    def document_text(doc_id: str) -> str | None:
        chunks = pipeline.store.chunks(doc_id)
        return chunks[0].text if chunks else None

    def join(held: Sequence[PendingFeedback], now: float) -> tuple[list[TrainingPair], list[Rejected], int]:
        """Pairs for the feedback whose query is logged; rejects for unknown documents and expired waits."""
        pairs: list[TrainingPair] = []
        rejected: list[Rejected] = []
        done: list[PendingFeedback] = []
        for item in held:
            feedback = FeedbackEvent.model_validate_json(item.value)
            message = RawMessage(item.topic, item.partition, item.offset, item.key, item.value)
            logged = pipeline.query_log.get(item.query_id)
            if logged is not None:
                joined = pairs_from_feedback(feedback, logged, document_text,
                                             pair_lineage(item.topic, item.partition, item.offset))
                if joined is None:
                    rejected.append(Rejected(message, (FieldError(loc="doc_id", msg=(
                        f"unknown document: {feedback.doc_id!r} is neither a served hit nor indexed")),)))
                else:
                    pairs += joined
                done.append(item)
            elif now - item.received_at > settings.feedback_hold_s:
                rejected.append(Rejected(message, (FieldError(loc="query_id", msg=(
                    f"no logged query/response for {item.query_id!r} within {settings.feedback_hold_s:.0f}s")),)))
                done.append(item)
        store.add(pairs)
        store.release(done)
        return pairs, rejected, len(held) - len(done)

    settling = asyncio.Lock()  # the agent and the retry timer never settle the same feedback twice

    async def settle(held: Sequence[PendingFeedback]) -> None:
        async with settling:
            pending = {(p.topic, p.partition, p.offset) for p in store.held()}
            held = [h for h in held if (h.topic, h.partition, h.offset) in pending]
            pairs, rejected, waiting = await asyncio.get_running_loop().run_in_executor(None, join, held, time.time())
            await pipeline.dead_letter(rejected, TOPIC)
        metrics.TRAINING_PAIRS.labels("positive").inc(sum(p.kind == "positive" for p in pairs))
        metrics.TRAINING_PAIRS.labels("negative").inc(sum(p.kind == "negative" for p in pairs))
        metrics.FEEDBACK_WAITING.set(waiting)
        await emit(policy.after_new_pairs() if pairs else None)

    async def emit(request: RetrainRequest | None) -> None:
        if request is not None:
            await (await retrain.send(key=settings.model_name.encode(), value=request.model_dump_json().encode()))
            metrics.RETRAIN_REQUESTS.labels(request.reason).inc()

    async def receive(events: Sequence[EventT]) -> None:
        accepted = await pipeline.admit(events, TOPIC, FeedbackEvent, "query_id")
        now = time.time()
        held = [PendingFeedback(a.message.topic, a.message.partition, a.message.offset, a.message.key,
                                a.message.value or b"", a.record.query_id, now) for a in accepted]
        store.hold(held)  # durable before the batch is acknowledged
        await settle(held)

    pipeline.batch_agent(TOPIC, "feedback", 64, 0.2, receive)

    @pipeline.app.timer(1.0)
    async def retry_held() -> None:
        held = await asyncio.get_running_loop().run_in_executor(None, store.held)
        if held:
            await settle(held)
        await emit(policy.on_tick())
