"""Feedback -> training pairs (joined with the logged query/response), and the retrain policy that decides when
they are worth a new model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas import FeedbackEvent, FieldError, RetrainRequest
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.training_pairs import PendingFeedback, TrainingPair, TrainingPairs, pair_lineage


def pairs_from_feedback(feedback: FeedbackEvent, logged: LoggedQuery, document_text: Callable[[str], str | None],
                        lineage: str) -> list[TrainingPair] | None:
    """Pairs for one judgement joined with its logged query/response; None when the document is unknown.

    A positive judgement also makes hard negatives of the served hits ranked below that document.
    """
    query = str(logged.query.get("text", ""))
    hits = logged.response.get("hits") or []
    best_text: dict[str, str] = {}
    for hit in hits:
        best_text.setdefault(hit["doc_id"], hit["text"])
    text = best_text.get(feedback.doc_id) or document_text(feedback.doc_id)
    if text is None:
        return None
    judgement = feedback.judgement
    if judgement == 0:
        return []
    kind = "positive" if judgement > 0 else "negative"
    pairs = [TrainingPair(feedback.query_id, query, feedback.doc_id, text, kind, "feedback", lineage)]
    if judgement > 0:
        ranked = list(best_text)
        below = ranked[ranked.index(feedback.doc_id) + 1:] if feedback.doc_id in ranked else []
        pairs += [TrainingPair(feedback.query_id, query, doc_id, best_text[doc_id], "negative", "served", lineage)
                  for doc_id in below]
    return pairs


class RetrainPolicy:
    """Fires on every N new positive pairs or on a schedule, at most once per `min_interval_s`."""

    def __init__(self, pairs: TrainingPairs, every_positive: int, min_interval_s: float, schedule_s: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.pairs = pairs
        self.every_positive = every_positive
        self.min_interval_s = min_interval_s
        self.schedule_s = schedule_s
        self.clock = clock
        self._started = clock()

    def _request(self, reason: str) -> RetrainRequest | None:
        now = self.clock()
        last = self.pairs.last_retrain()
        if last is not None and now - last < self.min_interval_s:
            return None
        new_pairs = self.pairs.count(since=last or 0.0)
        self.pairs.record_retrain(reason, new_pairs, now)
        return RetrainRequest(reason=reason, pairs=new_pairs, requested_at=datetime.fromtimestamp(now, UTC))

    def after_new_pairs(self) -> RetrainRequest | None:
        positives = self.pairs.count("positive", since=self.pairs.last_retrain() or 0.0)
        return self._request("feedback") if positives >= self.every_positive else None

    def on_tick(self) -> RetrainRequest | None:
        """The schedule: a retrain every `schedule_s` (0 disables it) when there are new pairs."""
        if not self.schedule_s:
            return None
        last = self.pairs.last_retrain() or self._started
        if self.clock() - last < self.schedule_s or not self.pairs.count(since=last):
            return None
        return self._request("schedule")


@dataclass(frozen=True)
class JoinOutcome:
    """What settling held feedback gave: new pairs, feedback that can never be joined (with why), and how many
    records still wait for their query's response."""

    pairs: list[TrainingPair]
    refused: list[tuple[PendingFeedback, FieldError]]
    waiting: int


class FeedbackJoin:
    """Joins held feedback with the query log: pairs for feedback whose query is logged, refusals for unknown
    documents and for feedback that waited longer than `hold_s`; settled records leave the durable hold."""

    def __init__(self, pairs: TrainingPairs, query_log: QueryLog, document_text: Callable[[str], str | None],
                 hold_s: float) -> None:
        self.pairs = pairs
        self.query_log = query_log
        self.document_text = document_text
        self.hold_s = hold_s

    def settle(self, held: Sequence[PendingFeedback], now: float) -> JoinOutcome:
        pairs: list[TrainingPair] = []
        refused: list[tuple[PendingFeedback, FieldError]] = []
        done: list[PendingFeedback] = []
        for item in held:
            try:
                feedback = FeedbackEvent.model_validate_json(item.value)
                logged = self.query_log.get(item.query_id)
                joined = None if logged is None else pairs_from_feedback(
                    feedback, logged, self.document_text, pair_lineage(item.topic, item.partition, item.offset))
            except Exception as exc:  # one record's failure is its own: refused, the others joined
                refused.append((item, FieldError(loc="record", msg=f"{type(exc).__name__}: {exc}")))
                done.append(item)
                continue
            if logged is not None:
                if joined is None:
                    refused.append((item, FieldError(loc="doc_id", msg=(
                        f"unknown document: {feedback.doc_id!r} is neither a served hit nor indexed"))))
                else:
                    pairs += joined
                done.append(item)
            elif now - item.received_at > self.hold_s:
                refused.append((item, FieldError(loc="query_id", msg=(
                    f"no logged query/response for {item.query_id!r} within {self.hold_s:.0f}s"))))
                done.append(item)
        self.pairs.add(pairs)
        self.pairs.release(done)
        return JoinOutcome(pairs, refused, len(held) - len(done))
