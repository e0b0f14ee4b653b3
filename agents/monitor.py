"""Monitor agent: `documents`, `queries`, `feedback` -> windows -> quality suites and drift (off the hot path)
-> `quality` records, alert metrics, and rate-limited `retrain` requests on drift."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from schemas import DocumentEvent, FeedbackEvent, QualityReport, QueryEvent, Record
from streams import metrics
from streams.host import AgentHost
from streams.ml.monitoring import TOPICS, DriftThresholds, StreamMonitor, Window
from streams.ml.quality import QualityGate
from streams.processing import Contract, Outbox, publish
from streams.settings import Settings
from streams.sources.mapper import SourceContract
from streams.state.encoder import Encoder
from streams.validation import Accepted, RawMessage

log = logging.getLogger(__name__)
CONTRACTS: dict[str, Contract[Record]] = {
    "documents": Contract("documents", DocumentEvent, "doc_id"),
    "queries": Contract("queries", QueryEvent, "query_id"),
    "feedback": Contract("feedback", FeedbackEvent, "query_id"),
}


def register(worker: AgentHost) -> None:
    sources = worker.shared.sources
    try:
        gate = QualityGate(own_dir=worker.settings.quality_suites_dir, names={*TOPICS, *(s.topic for s in sources)})
    except ImportError:
        log.warning("monitor agent disabled: install gristmill[quality] for Great Expectations")
        return
    monitor = stream_monitor(gate, worker.shared.serving.current.encoder, worker.settings)
    evaluate = partial(publish_window, monitor=monitor, outbox=worker.outbox, model_key=worker.settings.model_name
                       .encode(), evaluator=ThreadPoolExecutor(1, thread_name_prefix="monitor"), running=set(),
                       waiting=Counter(), max_pending=worker.settings.monitor_max_pending_windows,
                       latest=worker.shared.quality)
    for topic in TOPICS:
        worker.observer(topic, f"monitor-{topic}", 500, 0.5, partial(observe, contract=CONTRACTS[topic],
                                                                   monitor=monitor, evaluate=evaluate))
    for source in sources:  # a source's documents, as mapped, in windows of their own
        worker.observer(source.topic, f"monitor-{source.topic.replace(':', '-')}", 500, 0.5,
                        partial(observe_source, source=source, monitor=monitor, evaluate=evaluate, fetching=set()),
                        consumes=source.consumes)
    worker.timer(1.0, partial(close_due_windows, monitor=monitor, evaluate=evaluate))


def stream_monitor(gate: QualityGate, encoder: Encoder, s: Settings) -> StreamMonitor:
    return StreamMonitor(
        gate, encoder, window_records=s.monitor_window_records, window_seconds=s.monitor_window_seconds,
        min_drift_records=s.monitor_min_drift_records, embed_sample=s.monitor_embed_sample,
        thresholds=DriftThresholds(s.drift_query_mean_shift, s.drift_query_mmd, s.drift_document_length_ks,
                                   s.drift_document_source_tv, s.drift_feedback_positive_shift),
        retrain_min_interval_s=s.retrain_min_interval_s, stale_after_s=s.stale_after_s)


def observe(messages: Sequence[RawMessage], *, contract: Contract[Record], monitor: StreamMonitor,
            evaluate: Callable[[Window], object]) -> None:
    """Add every record (or the fact that it was invalid) to its topic's open window; evaluate closed ones. A
    record the window cannot take is counted as invalid: the monitor never stops the stream."""
    for message in messages:
        checked = contract.check(message)
        record = checked.record if isinstance(checked, Accepted) else None
        try:
            closed = monitor.observe(contract.topic, record, message.timestamp)
        except Exception as exc:
            log.warning("monitor: %s[%d]@%d not observed: %s: %s", message.topic, message.partition, message.offset,
                        type(exc).__name__, exc)
            metrics.RECORDS_FAILED.labels(contract.topic, type(exc).__name__).inc()
            closed = monitor.observe(contract.topic, None, message.timestamp)
        if closed is not None:
            evaluate(closed)


def observe_source(messages: Sequence[RawMessage], *, source: SourceContract, monitor: StreamMonitor,
                   evaluate: Callable[[Window], object], fetching: set[asyncio.Future[None]]) -> None:
    """A source's records as the ingest agent maps them (without counting them again): a document change, or an
    invalid record. Records skipped quietly, truncates and rows leaving the filter are no document change; a record
    whose schema is not fetched yet is not judged (counted) and its schema is fetched in the background."""
    mapper = source.mapper
    assert mapper is not None
    for message in messages:
        if mapper.registry is not None and not mapper.registry.ready(message.key, message.value):
            fetching.add(task := asyncio.ensure_future(mapper.registry.fetch([message.key, message.value])))
            task.add_done_callback(fetching.discard)  # judged from the next record of that schema on
            metrics.MONITOR_RECORDS_UNJUDGED.labels(source.topic).inc()
            continue
        try:
            change = mapper.change(message)
            record = mapper.from_change(change, message)
        except Exception:  # a dead letter of the ingest agent's: an invalid record here
            record = None
        else:  # skipped quietly, a truncate, or a row leaving the filter: not a document change to judge
            if not isinstance(record, DocumentEvent) or (change.kind == "upsert" and record.op == "delete"):
                continue
        closed = monitor.observe(source.topic, record, message.timestamp)
        if closed is not None:
            evaluate(closed)


async def close_due_windows(*, monitor: StreamMonitor, evaluate: Callable[[Window], object]) -> None:
    for window in monitor.due():
        evaluate(window)
    if monitor.stale_topics():
        refresh_alerts(monitor)


def publish_window(window: Window, *, monitor: StreamMonitor, outbox: Outbox, model_key: bytes,
                   evaluator: ThreadPoolExecutor, running: set[asyncio.Task[None]], waiting: Counter[str],
                   max_pending: int = 4, latest: dict[str, QualityReport] | None = None
                   ) -> asyncio.Task[None] | None:
    """Evaluate a window on the monitor's own thread (one at a time) and publish its report, in the background.
    While `max_pending` windows of the same topic wait for that thread, a window of that topic is skipped (counted,
    logged): a monitor that falls behind a busy stream must not pile up its windows in memory, nor starve the
    windows of a quieter topic."""
    if waiting[window.topic] >= max_pending:
        log.warning("monitor: the %s window of %d records is skipped: %d of its windows wait for evaluation",
                    window.topic, window.size, waiting[window.topic])
        metrics.MONITOR_WINDOWS_SKIPPED.labels(window.topic).inc()
        return None
    waiting[window.topic] += 1

    async def run() -> None:
        try:
            result = await asyncio.get_running_loop().run_in_executor(evaluator, monitor.evaluate, window)
        except Exception as exc:  # one window's failure is that window's alone
            log.exception("monitor: the %s window of %d records could not be evaluated", window.topic, window.size)
            metrics.RECORDS_FAILED.labels(window.topic, f"window {type(exc).__name__}").inc()
            return
        finally:
            waiting[window.topic] -= 1
        await publish(outbox, "quality", window.topic.encode(), result.report)
        if latest is not None:
            latest[window.topic] = result.report  # what the dashboard's alerts show
        if result.retrain is not None:
            await publish(outbox, "retrain", model_key, result.retrain)
            metrics.RETRAIN_REQUESTS.labels("drift").inc()
        metrics.GX_SECONDS.labels(window.topic).observe(result.outcome.seconds)
        metrics.MONITOR_LAG_SECONDS.labels(window.topic).set(result.lag_s)
        metrics.QUALITY_WINDOWS.labels(window.topic, str(result.report.success).lower()).inc()
        for name, value in result.report.drift.items():
            metrics.DRIFT_SCORE.labels(window.topic, name).set(value)
        for failed in result.report.failed:
            metrics.GX_FAILURES.labels(window.topic, failed.expectation).inc()
        refresh_alerts(monitor)

    task = asyncio.ensure_future(run())
    running.add(task)  # keep a reference until it is done
    task.add_done_callback(running.discard)
    return task


def refresh_alerts(monitor: StreamMonitor) -> None:
    for topic in list(monitor.alerts):
        for kind in ("quality", "drift", "stale"):
            metrics.ALERT.labels(topic, kind).set(int(kind in monitor.alerts[topic]))
