"""The commit gate on the real broker: withheld batches (a first batch, a single-record batch, a batch between two
good ones) are never committed past, are re-delivered after a restart, and end applied. Committed offsets are read
back with a plain confluent-kafka consumer of the worker's group."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from tests.kafka_io import produce

pytestmark = pytest.mark.integration
NAMESPACE = "gate-it"
TOPIC = f"{NAMESPACE}.documents"


def committed(bootstrap: str) -> int:
    """The group's committed offset of the (single) documents partition; -1 when nothing was committed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"gristmill-{NAMESPACE}",
                         "enable.auto.commit": False})
    try:
        (tp,) = consumer.committed([TopicPartition(TOPIC, 0)], timeout=10)
        return tp.offset if tp.offset >= 0 else -1
    finally:
        consumer.close()


def docs(*doc_ids: str) -> list[tuple[bytes, bytes]]:
    return [(d.encode(), json.dumps({"doc_id": d, "version": 1, "op": "upsert", "text": f"Note {d}."}).encode())
            for d in doc_ids]


def failures(worker: WorkerProcess) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        text = page.read().decode()
    return float(re.search(r"^gristmill_store_failures_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def indexed(worker: WorkerProcess, *doc_ids: str) -> bool:
    request = urllib.request.Request(f"{worker.url}/documents/versions", data=json.dumps({"doc_ids": doc_ids})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return all(v == 1 for v in json.load(response)["versions"].values())


def test_withheld_batches_are_never_committed_past_and_are_re_delivered(tmp_path: Path, registry_dir: Path,
                                                                       broker: EmbeddedBroker) -> None:
    bootstrap = broker.bootstrap_servers
    plan = tmp_path / "faults.json"
    worker = WorkerProcess(tmp_path / "data", registry_dir, bootstrap, NAMESPACE, GRISTMILL_PARTITIONS="1",
                           GRISTMILL_FAULTS_FILE=str(plan), GRISTMILL_STORE_RETRY_MAX_S="0.3")

    def withhold(doc_id: str) -> None:  # writes of this document fail until the plan is removed
        plan.write_text(json.dumps({"mode": "error", "operations": ["upsert_chunks"], "doc_ids": [doc_id]}))

    def stop_while_failing() -> None:
        before = failures(worker)
        worker.wait_for(lambda: failures(worker) >= before + 2, 60, "the withheld batch failing")
        assert worker.stop() == 0

    try:
        # 1. the first batch is withheld: nothing may be committed
        withhold("a0")
        worker.start()
        produce(bootstrap, TOPIC, docs("a0", "a1"))
        stop_while_failing()
        assert committed(bootstrap) <= 0
        plan.unlink()
        worker.start()
        worker.wait_for(lambda: indexed(worker, "a0", "a1"), 60, "the first batch re-delivered and applied")
        worker.wait_for(lambda: committed(bootstrap) == 2, 30, "committed past the first batch")

        # 2. a good batch, then a single-record batch withheld, then a good batch behind it
        produce(bootstrap, TOPIC, docs("b2", "b3"))
        worker.wait_for(lambda: indexed(worker, "b2", "b3") and committed(bootstrap) == 4, 60, "good batch")
        withhold("c4")
        produce(bootstrap, TOPIC, docs("c4"))
        produce(bootstrap, TOPIC, docs("d5", "d6"))  # a good batch behind it, while c4 keeps failing
        stop_while_failing()
        assert committed(bootstrap) == 4, "a commit passed the withheld single-record batch"
        plan.unlink()
        worker.start()
        worker.wait_for(lambda: indexed(worker, "c4", "d5", "d6"), 60, "the withheld batch and the next applied")
        worker.wait_for(lambda: committed(bootstrap) == 7, 30, "committed past everything")
        assert worker.get("/health")["status"] == "ok"
    finally:
        worker.stop()
