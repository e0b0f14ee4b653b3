"""Monitor agent: `documents`, `queries`, `feedback` -> windows -> quality suites and drift (off the hot path)
-> `quality` records, alert metrics, and rate-limited `retrain` requests on drift."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from schemas import DocumentEvent, FeedbackEvent, QueryEvent, Record
from streams import metrics
from streams.app import Pipeline, raw_message
from streams.monitoring import TOPICS, DriftThresholds, StreamMonitor, Window
from streams.validation import Accepted, validate_message

log = logging.getLogger(__name__)
CONTRACTS: dict[str, tuple[type[Record], str]] = {
    "documents": (DocumentEvent, "doc_id"),
    "queries": (QueryEvent, "query_id"),
    "feedback": (FeedbackEvent, "query_id"),
}


def register(pipeline: Pipeline) -> None:
    try:
        from streams.quality import QualityGate

        gate = QualityGate()
    except ImportError:
        log.warning("monitor agent disabled: install gristmill[quality] for Great Expectations")
        return
    s = pipeline.settings
    monitor = StreamMonitor(
        gate, pipeline.encoder, window_records=s.monitor_window_records, window_seconds=s.monitor_window_seconds,
        min_drift_records=s.monitor_min_drift_records, embed_sample=s.monitor_embed_sample,
        thresholds=DriftThresholds(s.drift_query_mean_shift, s.drift_query_mmd, s.drift_document_length_ks,
                                   s.drift_document_source_tv, s.drift_feedback_positive_shift),
        retrain_min_interval_s=s.retrain_min_interval_s, stale_after_s=s.stale_after_s)
    evaluator = ThreadPoolExecutor(1, thread_name_prefix="monitor")  # one window at a time, off the event loop
    quality, retrain = pipeline.topic("quality"), pipeline.topic("retrain")
    running: set[asyncio.Task[None]] = set()

    async def publish(window: Window) -> None:
        result = await asyncio.get_running_loop().run_in_executor(evaluator, monitor.evaluate, window)
        await quality.send(key=window.topic.encode(), value=result.report.model_dump_json().encode())
        if result.retrain is not None:
            await retrain.send(key=s.model_name.encode(), value=result.retrain.model_dump_json().encode())
            metrics.RETRAIN_REQUESTS.labels("drift").inc()
        metrics.GX_SECONDS.labels(window.topic).observe(result.outcome.seconds)
        metrics.MONITOR_LAG_SECONDS.labels(window.topic).set(result.lag_s)
        metrics.QUALITY_WINDOWS.labels(window.topic, str(result.report.success).lower()).inc()
        for name, value in result.report.drift.items():
            metrics.DRIFT_SCORE.labels(window.topic, name).set(value)
        for failed in result.report.failed:
            metrics.GX_FAILURES.labels(window.topic, failed.expectation).inc()
        refresh_alerts()

    def spawn(window: Window) -> None:
        task = asyncio.ensure_future(publish(window))
        running.add(task)
        task.add_done_callback(running.discard)

    def refresh_alerts() -> None:
        for topic in TOPICS:
            for kind in ("quality", "drift", "stale"):
                metrics.ALERT.labels(topic, kind).set(int(kind in monitor.alerts[topic]))

    def watcher(topic: str):  # type: ignore[no-untyped-def]
        model, key_field = CONTRACTS[topic]

        async def watch(stream):  # type: ignore[no-untyped-def]
            # Batches are acknowledged as soon as they are observed: the monitor never holds an offset back
            # (iterating events one by one would keep the last one unacknowledged, stalling rebalances).
            async for events in stream.take_events(500, 0.5):
                for event in events:
                    checked = validate_message(raw_message(event), model, key_field)
                    record = checked.record if isinstance(checked, Accepted) else None
                    closed = monitor.observe(topic, record, event.message.timestamp)
                    if closed is not None:
                        spawn(closed)
        return watch

    for topic in TOPICS:
        pipeline.app.agent(pipeline.topic(topic), name=f"monitor-{topic}")(watcher(topic))

    @pipeline.app.timer(1.0)
    async def close_windows() -> None:
        for window in monitor.due():
            spawn(window)
        if monitor.stale_topics():
            refresh_alerts()
