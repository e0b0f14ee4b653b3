"""A failing store pauses ingest (nothing committed, nothing dropped) and the worker recovers when it returns."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from tests.kafka_io import produce

pytestmark = pytest.mark.integration
NAMESPACE = "faults-it"


def metric(worker: WorkerProcess, pattern: str) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        text = page.read().decode()
    return sum(float(v) for v in re.findall("^" + pattern + r" (\S+)$", text, re.M))


def docs(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}-{i}".encode(), json.dumps({"doc_id": f"{prefix}-{i}", "version": 1, "op": "upsert",
                                                   "text": f"Record {i} of batch {prefix}."}).encode())
            for i in range(count)]


def test_outage_backpressure_and_recovery(tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> None:
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"mode": "error", "operations": ["upsert_chunks", "put_documents"]}))
    worker = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, NAMESPACE,
                           GRISTMILL_FAULTS_FILE=str(plan), GRISTMILL_STORE_RETRY_MAX_S="0.5").start()
    try:
        produce(broker.bootstrap_servers, f"{NAMESPACE}.documents", docs("a", 40))
        worker.wait_for(lambda: metric(worker, "gristmill_store_failures_total") >= 3, 60, "retries with backoff")
        time.sleep(2)
        assert worker.get("/health")["index"]["documents"] == 0
        assert metric(worker, "gristmill_store_up") == 0
        assert metric(worker, r'gristmill_documents_total\{outcome="\w+"\}') == 0  # nothing applied or dropped
        worker.wait_for(lambda: metric(worker, r'gristmill_consumer_lag\{partition="\d+",topic="faults-it.documents"\}')
                        > 0, 30, "consumer lag exported while nothing is committed")

        plan.write_text(json.dumps({"mode": "slow", "delay_s": 0.2}))  # the store comes back, slowly
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 40, 120, "recovery")
        produce(broker.bootstrap_servers, f"{NAMESPACE}.documents", docs("b", 10))
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 50, 120, "slow store keeps up")
        assert metric(worker, "gristmill_store_up") == 1
        worker.wait_for(lambda: metric(worker, r'gristmill_consumer_lag\{partition="\d+",'
                                               r'topic="faults-it.documents"\}') == 0, 30, "offsets committed")
    finally:
        worker.stop()


def test_stopping_during_an_outage_commits_nothing_and_restart_catches_up(tmp_path: Path, registry_dir: Path,
                                                                          broker: EmbeddedBroker) -> None:
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"mode": "error", "operations": ["upsert_chunks"]}))
    worker = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, "faults-stop",
                           GRISTMILL_FAULTS_FILE=str(plan), GRISTMILL_STORE_RETRY_MAX_S="0.5").start()
    try:
        produce(broker.bootstrap_servers, "faults-stop.documents", docs("c", 20))
        worker.wait_for(lambda: metric(worker, "gristmill_store_failures_total") >= 2, 60, "store failing")
        started = time.monotonic()
        worker.stop()  # SIGTERM while the write keeps failing: the worker gives up the batch and exits
        assert time.monotonic() - started < 25
        assert "not done before shutdown" in worker.log() and "gristmill stopped" in worker.log()
        plan.unlink()
        worker.start()
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 20, 120, "re-delivered and indexed")
    finally:
        worker.stop()
