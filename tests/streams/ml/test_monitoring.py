"""Monitoring on synthetic streams: drift and quality regressions are caught, stationary streams are quiet."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from schemas import Record
from streams.devtools.demo.synthetic import documents, feedback, queries
from streams.ml import drift
from streams.ml.monitoring import StreamMonitor, Window, WindowReport
from streams.ml.quality import QualityGate
from streams.state.encoder import OnnxEncoder

WINDOW = 200


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def gate() -> QualityGate:
    return QualityGate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def monitor(gate: QualityGate, encoder: OnnxEncoder, clock: Clock) -> StreamMonitor:
    return StreamMonitor(gate, encoder, window_records=WINDOW, window_seconds=60, retrain_min_interval_s=600,
                         stale_after_s=120, clock=clock)


def feed(monitor: StreamMonitor, topic: str, records: Sequence[Record | None]) -> list[WindowReport]:
    reports = []
    for record in records:
        closed = monitor.observe(topic, record)
        if closed is not None:
            reports.append(monitor.evaluate(closed))
    return reports


def test_stationary_streams_raise_no_alarm(monitor: StreamMonitor) -> None:
    reports = (feed(monitor, "queries", [q for s in range(4) for q in queries(WINDOW, seed=s)])
               + feed(monitor, "documents", [d for s in range(4) for d in documents(WINDOW, seed=s)])
               + feed(monitor, "feedback", [f for s in range(4) for f in feedback(WINDOW, seed=s)]))
    assert len(reports) == 12
    assert all(r.report.success and not r.drifted and r.retrain is None for r in reports), [
        (r.report.suite, r.report.failed, r.report.drift) for r in reports if not r.report.success or r.drifted]
    assert all(not alerts for alerts in monitor.alerts.values())


def test_query_topic_drift_is_detected_within_one_window_and_requests_retrain(monitor: StreamMonitor) -> None:
    feed(monitor, "queries", queries(WINDOW, seed=1))  # reference
    feed(monitor, "queries", queries(WINDOW, seed=2))  # same domain
    (shifted,) = feed(monitor, "queries", queries(WINDOW, seed=3, domain="finance"))
    assert {"query_mean_shift", "query_mmd"} <= set(shifted.drifted)
    assert shifted.retrain is not None and shifted.retrain.reason == "drift"
    assert "drift" in monitor.alerts["queries"]
    # the drifted state became the new reference: more of it is no longer drift
    (settled,) = feed(monitor, "queries", queries(WINDOW, seed=4, domain="finance"))
    assert not settled.drifted and "drift" not in monitor.alerts["queries"]


def test_retrain_on_drift_is_rate_limited(monitor: StreamMonitor, clock: Clock) -> None:
    feed(monitor, "documents", documents(WINDOW, seed=1))  # reference
    (first,) = feed(monitor, "documents", documents(WINDOW, seed=2, sources=("forum",)))
    assert "document_source_tv" in first.drifted and first.retrain is not None
    feed(monitor, "feedback", feedback(WINDOW, seed=3))  # reference
    clock.now += 60
    (burst,) = feed(monitor, "feedback", feedback(WINDOW, seed=4, positive_share=0.97))
    assert "feedback_positive_shift" in burst.drifted and burst.retrain is None and burst.retrain_suppressed
    clock.now += 600
    (later,) = feed(monitor, "documents", documents(WINDOW, seed=6, mean_words=900, sources=("forum",)))
    assert later.drifted == ["document_length_ks"] and later.retrain is not None


def test_quality_regression_fails_the_suite_with_the_reason(monitor: StreamMonitor) -> None:
    feed(monitor, "documents", documents(WINDOW, seed=1))
    (bad,) = feed(monitor, "documents", documents(WINDOW, seed=2, short_share=0.4))
    assert not bad.report.success and "quality" in monitor.alerts["documents"]
    failed = {(f.expectation, f.column) for f in bad.report.failed}
    assert ("expect_column_values_to_be_between", "text_length") in failed
    (good,) = feed(monitor, "documents", documents(WINDOW, seed=3))
    assert good.report.success and "quality" not in monitor.alerts["documents"]


def test_malformed_windows_do_not_crash(monitor: StreamMonitor, clock: Clock) -> None:
    empty = monitor.evaluate(Window("queries", clock.now))
    assert empty.report.success and empty.outcome.skipped and empty.report.window.records == 0
    monitor.observe("queries", queries(1, seed=9)[0])
    clock.now += 61
    (single,) = monitor.due()
    assert monitor.evaluate(single).outcome.skipped
    all_invalid = feed(monitor, "documents", [None] * WINDOW)
    assert len(all_invalid) == 1 and all_invalid[0].report.drift["invalid_share"] == 1.0
    assert monitor.due() == []


def test_a_silent_topic_raises_a_stale_alert(monitor: StreamMonitor, clock: Clock) -> None:
    monitor.observe("feedback", feedback(1, seed=1)[0])
    assert monitor.stale_topics() == []
    clock.now += 121
    assert monitor.stale_topics() == ["feedback"] and "stale" in monitor.alerts["feedback"]
    monitor.observe("feedback", feedback(1, seed=2)[0])
    assert "stale" not in monitor.alerts["feedback"]
    assert "queries" not in monitor.stale_topics()  # never active: not stale


def test_drift_statistics() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    assert drift.mmd_rbf(a, b) < 0.01 and drift.mmd_rbf(a, b + 2.0) > 0.2
    assert drift.mean_cosine_shift(a + 5, b + 5) < 0.01
    assert drift.ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0 and drift.ks_statistic([1, 2], [8, 9]) == 1.0
    assert drift.total_variation(["a", "b"], ["a", "b"]) == 0.0 and drift.total_variation(["a"], ["b"]) == 1.0
    assert drift.ks_statistic([], [1.0]) == 0.0 and drift.mmd_rbf(a[:1], b[:1]) == 0.0
