"""Two worker processes in one consumer group: when one of them rewrites or deletes a document, the other stops
answering from its cached answers at once (it reads `index-changes` outside the group), not after the cache's TTL.
With a shared Qdrant server (compose) that is what keeps a deleted document out of every worker's answers."""

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

NAMESPACE = "index-changes-it"


def remote_invalidations(worker: WorkerProcess) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        text = page.read().decode()
    found = re.search(r'gristmill_cache_invalidations_total\{cause="remote"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_a_write_on_one_worker_drops_the_cached_answers_of_the_other(tmp_path: Path, registry_dir: Path,
                                                                     broker: EmbeddedBroker) -> None:
    env = {"GRISTMILL_QUERY_CACHE_TTL_S": "600", "GRISTMILL_PARTITIONS": "4"}  # the TTL cannot be what ends it
    workers = [WorkerProcess(tmp_path / name, registry_dir, broker.bootstrap_servers, NAMESPACE, **env).start()
               for name in ("a", "b")]
    try:
        topic = f"{NAMESPACE}.documents"
        docs: dict[str, str] = {}
        owners: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while set(owners.values()) != {0, 1}:  # until the group has settled with partitions on both workers
            assert time.monotonic() < deadline, f"documents were indexed by one worker only: {owners}"
            wave = {f"note-{len(docs) + i}": f"maintenance note {len(docs) + i}: replace the pump filter"
                    for i in range(8)}
            docs.update(wave)
            produce(broker.bootstrap_servers, topic, [(d.encode(), json.dumps(
                {"doc_id": d, "version": 1, "op": "upsert", "text": t}).encode()) for d, t in wave.items()])
            time.sleep(2)
            owners = {d: i for i, w in enumerate(workers) for d in docs if w.get(f"/documents/{d}")}
        doc_id = next(d for d, owner in owners.items() if owner == 0)  # a document the first worker writes
        other = workers[1]
        query = {"q": "replace the pump filter", "k": 3}
        other.get("/search", **query)
        assert other.get("/search", **query)["cached"] is True
        before = remote_invalidations(other)

        produce(broker.bootstrap_servers, topic, [(doc_id.encode(), json.dumps(
            {"doc_id": doc_id, "version": 2, "op": "delete"}).encode())])
        started = time.monotonic()
        other.wait_for(lambda: other.get("/search", **query)["cached"] is False, 30,
                       "the other worker's cached answer dropped")
        print(f"cache dropped on the other worker {time.monotonic() - started:.2f}s after the delete was produced")
        assert remote_invalidations(other) > before
        assert workers[0].get(f"/documents/{doc_id}")["deleted"] is True
    finally:
        for worker in workers:
            worker.stop()
