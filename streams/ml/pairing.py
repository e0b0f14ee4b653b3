"""Feedback -> training pairs (joined with the logged query/response), and the retrain policy that decides when
they are worth a new model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas import FeedbackEvent, FieldError, RetrainRequest
from streams.state.errors import StoreError
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.training_pairs import (
    Judgement,
    PendingFeedback,
    RecordedRetrain,
    TrainingPair,
    TrainingPairs,
    inferred_negatives,
)


def served_documents(logged: LoggedQuery) -> tuple[tuple[str, str], ...]:
    """The documents a logged response served, best first, each with the text of its best chunk."""
    best_text: dict[str, str] = {}
    for hit in logged.response.get("hits") or []:
        best_text.setdefault(hit["doc_id"], hit["text"])
    return tuple(best_text.items())


def judgement_of(feedback: FeedbackEvent, logged: LoggedQuery, document_text: Callable[[str], str | None],
                 item: PendingFeedback) -> Judgement | None:
    """The judgement `feedback` (held as `item`) makes, joined with its logged query/response; None when the
    document is unknown (neither served nor indexed)."""
    served = served_documents(logged)
    text = dict(served).get(feedback.doc_id) or document_text(feedback.doc_id)
    if text is None:
        return None
    return Judgement(feedback.query_id, str(logged.query.get("text", "")), feedback.doc_id, text,
                     feedback.judgement, item.topic, item.partition, item.offset, item.received_at, served)


def pairs_from_feedback(feedback: FeedbackEvent, logged: LoggedQuery, document_text: Callable[[str], str | None],
                        lineage: str) -> list[TrainingPair] | None:
    """Pairs for one judgement on its own, joined with its logged query/response; None when the document is unknown.

    A positive judgement also makes hard negatives of the served hits ranked below that document.
    """
    query = str(logged.query.get("text", ""))
    served = served_documents(logged)
    text = dict(served).get(feedback.doc_id) or document_text(feedback.doc_id)
    if text is None:
        return None
    judgement = feedback.judgement
    if judgement == 0:
        return []
    kind = "positive" if judgement > 0 else "negative"
    pairs = [TrainingPair(feedback.query_id, query, feedback.doc_id, text, kind, "feedback", lineage)]
    if judgement > 0:
        below = inferred_negatives(served, {feedback.doc_id: lineage}, ())
        pairs += [TrainingPair(feedback.query_id, query, doc_id, doc_text, "negative", "served", lineage)
                  for doc_id, (doc_text, _) in below.items()]
    return pairs


class RetrainPolicy:
    """Fires on every N new positive pairs or on a schedule, at most once per `min_interval_s`. "New" is counted by
    the pairs' change sequence, so workers on hosts with different clocks agree on it; the shared feedback state
    records each request in one transaction, so of several workers deciding at once one fires."""

    def __init__(self, pairs: TrainingPairs, every_positive: int, min_interval_s: float, schedule_s: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.pairs = pairs
        self.every_positive = every_positive
        self.min_interval_s = min_interval_s
        self.schedule_s = schedule_s
        self.clock = clock
        self._started = clock()

    def after_new_pairs(self) -> PendingRetrain | None:
        now = self.clock()
        return PendingRetrain.of(self.pairs.record_retrain_if(
            "feedback", now, self.min_interval_s, min_new_positive=self.every_positive, claim_s=UNPUBLISHED_AFTER_S))

    def on_tick(self) -> PendingRetrain | None:
        """The schedule: a retrain every `schedule_s` (0 disables it) when there are new pairs."""
        if not self.schedule_s:
            return None
        now = self.clock()
        if now - (self.pairs.last_retrain() or self._started) < self.schedule_s:
            return None
        return PendingRetrain.of(self.pairs.record_retrain_if(
            "schedule", now, max(self.min_interval_s, self.schedule_s), min_new_pairs=1, claim_s=UNPUBLISHED_AFTER_S))

    def unpublished(self) -> list[PendingRetrain]:
        """Requests never published whose publishing claim (`UNPUBLISHED_AFTER_S`, taken by the worker that
        records one) lapsed: the worker that recorded it stopped before publishing it. Claimed now by this worker,
        one at a time across workers."""
        recorded = self.pairs.claim_unpublished_retrains(self.clock(), UNPUBLISHED_AFTER_S)
        return [PendingRetrain(r.row, RetrainRequest(reason=r.reason, pairs=r.pairs,
                                                     requested_at=datetime.fromtimestamp(r.requested_at, UTC)))
                for r in recorded]


#: How long a worker holds its claim to publish a retrain request; one still unpublished after it is claimed and
#: published by whichever worker ticks next.
UNPUBLISHED_AFTER_S = 30.0


@dataclass(frozen=True)
class PendingRetrain:
    """A retrain request recorded by the policy, to publish and then mark published (`row`)."""

    row: int
    request: RetrainRequest

    @classmethod
    def of(cls, recorded: RecordedRetrain | None) -> PendingRetrain | None:
        if recorded is None:
            return None
        return cls(recorded.row, RetrainRequest(reason=recorded.reason, pairs=recorded.pairs,
                                                requested_at=datetime.fromtimestamp(recorded.requested_at, UTC)))


@dataclass(frozen=True)
class JoinOutcome:
    """What settling held feedback gave: new pairs (stored), feedback that can never be joined (with why), what is
    settled (to release from the hold once its dead letters are out), what still waits for its query's response,
    and the judgements of the accepted feedback (settled and not refused), in order."""

    pairs: list[TrainingPair]
    refused: list[tuple[PendingFeedback, FieldError]]
    settled: list[PendingFeedback]
    waiting: list[PendingFeedback]
    judged: list[Judgement] = field(default_factory=list)


class FeedbackJoin:
    """Joins held feedback with the query log: judgements (applied to the pairs, `TrainingPairs.judge`) for feedback
    whose query is logged, refusals for unknown documents and for feedback that waited longer than `hold_s`. A store
    that fails (`StoreError`: the query log, the index) fails the whole call, to be retried: only a record's own
    fault refuses it."""

    def __init__(self, pairs: TrainingPairs, query_log: QueryLog, document_text: Callable[[str], str | None],
                 hold_s: float) -> None:
        self.pairs = pairs
        self.query_log = query_log
        self.document_text = document_text
        self.hold_s = hold_s

    def settle(self, held: Sequence[PendingFeedback], now: float) -> JoinOutcome:
        judged: list[Judgement] = []
        refused: list[tuple[PendingFeedback, FieldError]] = []
        done: list[PendingFeedback] = []
        for item in held:
            try:
                feedback = FeedbackEvent.model_validate_json(item.value)
                logged = self.query_log.get(item.query_id)
                joined = None if logged is None else judgement_of(feedback, logged, self.document_text, item)
            except StoreError:
                raise  # an outage, not this record's fault: retried
            except Exception as exc:  # one record's failure is its own: refused, the others joined
                refused.append((item, FieldError(loc="record", msg=f"{type(exc).__name__}: {exc}")))
                done.append(item)
                continue
            if logged is not None:
                if joined is None:
                    refused.append((item, FieldError(loc="doc_id", msg=(
                        f"unknown document: {feedback.doc_id!r} is neither a served hit nor indexed"))))
                else:
                    judged.append(joined)
                done.append(item)
            elif now - item.received_at > self.hold_s:
                refused.append((item, FieldError(loc="query_id", msg=(
                    f"no logged query/response for {item.query_id!r} within {self.hold_s:.0f}s"))))
                done.append(item)
        pairs = self.pairs.judge(judged)
        return JoinOutcome(pairs, refused, done, [item for item in held if item not in done], judged)
