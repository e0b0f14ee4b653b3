"""The monitor agent in a real worker: quality records per window, drift -> `retrain`, alerts as metrics."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.demo.synthetic import documents, queries
from streams.devtools.worker_process import WorkerProcess
from tests.kafka_io import consume_all, produce

pytestmark = pytest.mark.integration

NAMESPACE = "monitor-it"
WINDOW = 120


@pytest.fixture
def worker(tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> Iterator[WorkerProcess]:
    process = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, NAMESPACE,
                            GRISTMILL_MONITOR_WINDOW_RECORDS=str(WINDOW), GRISTMILL_MONITOR_WINDOW_SECONDS="30")
    yield process.start()
    process.stop()


def encode(records) -> list[tuple[bytes, bytes]]:  # type: ignore[no-untyped-def]
    key = "doc_id" if hasattr(records[0], "doc_id") and not hasattr(records[0], "label") else "query_id"
    return [(getattr(r, key).encode(), r.model_dump_json(exclude_none=True).encode()) for r in records]


def test_windows_are_reported_and_query_drift_requests_a_retrain(worker: WorkerProcess,
                                                                 broker: EmbeddedBroker) -> None:
    bootstrap = broker.bootstrap_servers
    produce(bootstrap, f"{NAMESPACE}.documents", encode(documents(WINDOW, seed=1)))
    produce(bootstrap, f"{NAMESPACE}.queries", encode(queries(WINDOW, seed=1)))
    reports = consume_all(bootstrap, f"{NAMESPACE}.quality", 2, timeout_s=90)
    assert sorted(r["suite"] for r in reports) == ["documents", "queries"]
    assert all(r["success"] and r["window"]["records"] == WINDOW for r in reports)

    produce(bootstrap, f"{NAMESPACE}.queries", encode(queries(WINDOW, seed=2, domain="finance")))
    reports = consume_all(bootstrap, f"{NAMESPACE}.quality", 3, timeout_s=90)
    drifted = [r for r in reports if r["suite"] == "queries" and r["drift"].get("query_mean_shift", 0) > 0.08]
    assert len(drifted) == 1
    (request,) = consume_all(bootstrap, f"{NAMESPACE}.retrain", 1, timeout_s=60)
    assert request["reason"] == "drift"

    # metrics are updated after the records are sent, and ingest runs beside the monitor: poll, with a bound
    wanted = [r'gristmill_alert\{kind="drift",topic="queries"\} 1\.0',
              r'gristmill_gx_seconds_count\{topic="documents"\} 1\.0',
              r'gristmill_retrain_requests_total\{reason="drift"\} 1\.0']
    worker.wait_for(lambda: all(re.search(pattern, metrics_text(worker)) for pattern in wanted), 30,
                    "drift alert, GX timing and retrain counter exported")
    worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == WINDOW, 60,
                    "ingest kept going beside the monitor")


def metrics_text(worker: WorkerProcess) -> str:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        return page.read().decode()
