"""Stream monitoring: windows of validated records -> quality suites and drift vs a reference -> reports,
alerts and rate-limited `retrain` requests. Knows nothing of Kafka; the monitor agent feeds it."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas import QualityReport, QueryEvent, Record, RetrainRequest
from schemas.records import FailedExpectation, QualityWindow
from streams.ml import drift
from streams.ml.quality import FailedCheck, QualityGate, QualityOutcome, window_row
from streams.state.encoder import Encoder

TOPICS = ("documents", "queries", "feedback")


@dataclass(frozen=True)
class DriftThresholds:
    query_mean_shift: float = 0.08
    query_mmd: float = 0.05
    document_length_ks: float = 0.35
    document_source_tv: float = 0.35
    feedback_positive_shift: float = 0.3


@dataclass
class Window:
    topic: str
    opened_at: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # query texts, for embedding drift
    invalid: int = 0
    first_event: float | None = None
    last_event: float | None = None

    @property
    def size(self) -> int:
        return len(self.rows) + self.invalid


@dataclass
class Reference:
    rows: list[dict[str, Any]]
    embeddings: np.ndarray | None


@dataclass(frozen=True)
class WindowReport:
    report: QualityReport
    outcome: QualityOutcome
    drifted: list[str]
    retrain: RetrainRequest | None
    retrain_suppressed: bool
    lag_s: float  # last record of the window -> report ready


class StreamMonitor:
    """Thread-safe: `observe` is called from the event loop, `evaluate` from a worker thread."""

    def __init__(self, gate: QualityGate, encoder: Encoder | None, *, window_records: int = 1000,
                 window_seconds: float = 10.0, min_drift_records: int = 30, embed_sample: int = 256,
                 thresholds: DriftThresholds | None = None, retrain_min_interval_s: float = 3600.0,
                 stale_after_s: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.gate = gate
        self.encoder = encoder
        self.window_records = window_records
        self.window_seconds = window_seconds
        self.min_drift_records = min_drift_records
        self.embed_sample = embed_sample
        self.thresholds = thresholds or DriftThresholds()
        self.retrain_min_interval_s = retrain_min_interval_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, Window] = {}
        self._references: dict[str, Reference] = {}
        self._last_record: dict[str, float] = {}
        self._last_retrain: float | None = None
        self.alerts: defaultdict[str, set[str]] = defaultdict(set, {topic: set() for topic in TOPICS})

    def observe(self, topic: str, record: Record | None, event_time: float | None = None) -> Window | None:
        """Add one record (None: it failed validation); return the window if this record closed it."""
        now = self.clock()
        with self._lock:
            window = self._open.setdefault(topic, Window(topic, now))
            if record is None:
                window.invalid += 1
            else:
                window.rows.append(window_row(topic, record))
                if isinstance(record, QueryEvent) and len(window.texts) < self.embed_sample:
                    window.texts.append(record.text)
            stamp = event_time or now
            window.first_event = window.first_event or stamp
            window.last_event = stamp
            self._last_record[topic] = now
            self.alerts[topic].discard("stale")
            if window.size >= self.window_records:
                return self._open.pop(topic)
        return None

    def due(self) -> list[Window]:
        """Windows whose time bound has passed (the record-count bound closes them in `observe`)."""
        now = self.clock()
        with self._lock:
            closing = [t for t, w in self._open.items() if now - w.opened_at >= self.window_seconds]
            return [self._open.pop(t) for t in closing]

    def stale_topics(self) -> list[str]:
        """Topics that were active and have been silent for `stale_after_s`; they raise a stale alert."""
        now = self.clock()
        with self._lock:
            stale = [t for t, last in self._last_record.items() if now - last >= self.stale_after_s]
            for topic in stale:
                self.alerts[topic].add("stale")
            return stale

    def evaluate(self, window: Window) -> WindowReport:
        outcome = self.gate.validate(self.gate.suite_for(window.topic), window.rows)
        if window.invalid and not window.rows:  # nothing valid to judge is itself the failure (a broken mapping)
            outcome = replace(outcome, success=False, skipped=None, failed=[
                FailedCheck("every_record_valid", None, window.invalid)])
        embeddings = None
        if window.texts and self.encoder is not None and len(window.rows) >= self.min_drift_records:
            embeddings = self.encoder.encode(window.texts)
        scores = self._drift(window, embeddings)
        limits = self._limits(window.topic)
        drifted = sorted(name for name, value in scores.items() if value > limits.get(name, float("inf")))
        retrain, suppressed = None, False
        now = self.clock()
        with self._lock:
            if drifted:
                if self._last_retrain is None or now - self._last_retrain >= self.retrain_min_interval_s:
                    retrain = RetrainRequest(reason="drift", pairs=0, requested_at=datetime.now(UTC))
                    self._last_retrain = now
                else:
                    suppressed = True
            if len(window.rows) >= self.min_drift_records and (window.topic not in self._references or retrain):
                # the first full window is the reference; after a retrain the drifted state is the new normal
                self._references[window.topic] = Reference(window.rows, embeddings)
            alerts = self.alerts[window.topic]
            (alerts.add if not outcome.success else alerts.discard)("quality")
            (alerts.add if drifted else alerts.discard)("drift")
        started = datetime.fromtimestamp(window.first_event or window.opened_at, UTC)
        ended = datetime.fromtimestamp(window.last_event or now, UTC)
        report = QualityReport(
            window=QualityWindow(start=started, end=ended, records=window.size),
            suite=self.gate.suite_for(window.topic), success=outcome.success,
            failed=[FailedExpectation(expectation=f.expectation, column=f.column, observed=f.observed)
                    for f in outcome.failed],
            drift={**scores, "invalid_share": window.invalid / window.size if window.size else 0.0},
        )
        return WindowReport(report, outcome, drifted, retrain, suppressed, max(0.0, now - (window.last_event or now)))

    def _limits(self, topic: str) -> dict[str, float]:
        t = self.thresholds
        return {"query_mean_shift": t.query_mean_shift, "query_mmd": t.query_mmd,
                "document_length_ks": t.document_length_ks, "document_source_tv": t.document_source_tv,
                "feedback_positive_shift": t.feedback_positive_shift}

    def _drift(self, window: Window, embeddings: np.ndarray | None) -> dict[str, float]:
        with self._lock:
            reference = self._references.get(window.topic)
        if reference is None or len(window.rows) < self.min_drift_records:
            return {}
        now, then = window.rows, reference.rows
        if window.topic == "queries":
            scores = {"query_length_ks": drift.ks_statistic([r["text_length"] for r in then],
                                                            [r["text_length"] for r in now])}
            if embeddings is not None and reference.embeddings is not None:
                scores["query_mean_shift"] = drift.mean_cosine_shift(reference.embeddings, embeddings)
                scores["query_mmd"] = drift.mmd_rbf(reference.embeddings, embeddings)
            return scores
        if window.topic == "documents" or window.topic.startswith("source:"):  # a source's mapped documents
            lengths = ([r["text_length"] for r in rows if r["text_length"] is not None] for rows in (then, now))
            return {"document_length_ks": drift.ks_statistic(*lengths),
                    "document_source_tv": drift.total_variation([r["source"] for r in then],
                                                                [r["source"] for r in now])}
        positive = [float(np.mean([r["positive"] for r in rows])) for rows in (then, now)]
        return {"feedback_positive_shift": abs(positive[1] - positive[0])}
