"""A worker on an embedded broker, driven the way the ingest benchmarks need: bursts at full rate, paced streams,
idle CPU, and the worker's own per-stage time."""

from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import Producer

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from streams.metrics import INGEST_STAGES

NAMESPACE = "bench"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime in clock ticks (USER_HZ = 100)


class IngestRig:
    """A worker (its own data directory, `env` settings) consuming `<namespace>.documents` of an embedded broker."""

    def __init__(self, registry_dir: Path, namespace: str = NAMESPACE, **env: str) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="gristmill-bench-")
        self.broker = EmbeddedBroker()
        self.registry_dir, self.namespace, self.env = registry_dir, namespace, env
        self.topic = f"{namespace}.documents"
        self.worker: WorkerProcess | None = None
        self.indexed = 0

    def __enter__(self) -> IngestRig:
        self.broker.start()
        self.worker = WorkerProcess(Path(self._scratch.name), self.registry_dir, self.broker.bootstrap_servers,
                                    self.namespace, **self.env).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        try:
            if self.worker is not None:
                self.worker.stop()
        finally:
            self.broker.stop()
            self._scratch.cleanup()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def produce(self, docs: Sequence[tuple[str, str]], rate: float | None = None) -> dict[str, float]:
        """Produce document events (at `rate` docs/s, or as fast as possible); when each was sent."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 2, "acks": "all"})
        sent: dict[str, float] = {}
        started = time.time()
        for i, (doc_id, text) in enumerate(docs):
            if rate:
                delay = started + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            value = json.dumps({"doc_id": doc_id, "version": 1, "op": "upsert", "text": text}).encode()
            sent[doc_id] = time.time()
            producer.produce(self.topic, key=doc_id.encode(), value=value)
            producer.poll(0)
        producer.flush(60)
        return sent

    def wait_indexed(self, doc_ids: Sequence[str], timeout_s: float = 900) -> dict[str, float]:
        """When each document became searchable (its ledger's `indexed_at`)."""
        worker = self._worker
        target = self.indexed + len(doc_ids)
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] >= target, timeout_s,
                        f"{target} documents indexed")
        self.indexed = target
        return {doc_id: worker.get(f"/documents/{doc_id}")["indexed_at"] for doc_id in doc_ids}

    def burst(self, docs: Sequence[tuple[str, str]]) -> float:
        """Documents per second from the first one produced to the last one searchable."""
        sent = self.produce(docs)
        done = self.wait_indexed([d for d, _ in docs])
        return len(docs) / (max(done.values()) - min(sent.values()))

    def freshness(self, docs: Sequence[tuple[str, str]], rate: float) -> list[float]:
        """Seconds from produced to searchable of each document, produced at `rate` docs/s."""
        sent = self.produce(docs, rate)
        done = self.wait_indexed([d for d, _ in docs])
        return sorted(max(0.0, done[d] - sent[d]) for d in sent)

    def idle_cpu(self, settle_s: float = 10.0, seconds: float = 30.0) -> tuple[float, float]:
        """Share of one core the idle worker and the broker use over `seconds`, after `settle_s`."""
        worker = self._worker
        assert worker.process is not None and self.broker.pid is not None
        time.sleep(settle_s)
        before = cpu_seconds(worker.process.pid), cpu_seconds(self.broker.pid)
        time.sleep(seconds)
        after = cpu_seconds(worker.process.pid), cpu_seconds(self.broker.pid)
        return (after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds

    def stage_seconds(self) -> dict[str, float]:
        """The worker's `gristmill_stage_seconds_total` so far, by stage."""
        with urllib.request.urlopen(f"{self._worker.url}/metrics", timeout=10) as page:
            text = page.read().decode()
        found = {m.group(1): float(m.group(2))
                 for m in re.finditer(r'^gristmill_stage_seconds_total\{stage="(\w+)"\} (\S+)$', text, re.M)}
        return {stage: found.get(stage, 0.0) for stage in INGEST_STAGES}

    @property
    def pid(self) -> int:
        assert self._worker.process is not None
        return self._worker.process.pid

    @property
    def _worker(self) -> WorkerProcess:
        assert self.worker is not None, "use the rig as a context manager"
        return self.worker


def stage_shares(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, Any]:
    """Seconds per stage between two readings, and each stage's share of the wall time."""
    spent = {stage: after[stage] - before.get(stage, 0.0) for stage in after}
    return {stage: (seconds, seconds / wall_s) for stage, seconds in spent.items()}
