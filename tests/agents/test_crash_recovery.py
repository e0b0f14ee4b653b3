"""SIGKILL the worker at random points while it ingests and answers: after restarts nothing is lost or doubled.

`make test` runs one trial of 1,000 events; `make crash-test` five of 5,000 (the README's figures). Size with
GRISTMILL_CRASH_DOCS (events) and GRISTMILL_CRASH_TRIALS; GRISTMILL_CRASH_SEED picks other streams and kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from streams.ml.chunking import Chunker
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from tests.kafka_io import produce

# A SIGKILL during a rebalance once left faust waiting for in-flight records forever; GRISTMILL_IN_FLIGHT_WAIT_S
# now bounds that wait.
pytestmark = [pytest.mark.integration, pytest.mark.crash]

EVENTS = int(os.environ.get("GRISTMILL_CRASH_DOCS", "1000"))
TRIALS = int(os.environ.get("GRISTMILL_CRASH_TRIALS", "1"))
SEED = int(os.environ.get("GRISTMILL_CRASH_SEED", "0"))  # another seed: other streams and kill points
WORDS = ["stream", "index", "partition", "offset", "commit", "replica", "leader", "broker", "chunk", "vector",
         "model", "fresh"]


def event_stream(seed: int, count: int) -> tuple[list[tuple[bytes, bytes]], dict[str, tuple[int, str | None]]]:
    """Creates, updates (some out of order), duplicates and deletes; and the final state expected per doc."""
    rng = random.Random(seed)
    docs = [f"doc-{i}" for i in range(max(10, count // 3))]
    latest: dict[str, tuple[int, str | None]] = {}
    events = []
    for _ in range(count):
        doc_id = rng.choice(docs)
        version = rng.randint(1, 8)
        if rng.random() < 0.12:
            value: dict[str, object] = {"doc_id": doc_id, "version": version, "op": "delete"}
            text = None
        else:
            length = rng.choice([8, 30, 120, 260])
            text = " ".join(rng.choice(WORDS) for _ in range(length)) + f" ({doc_id} v{version})"
            value = {"doc_id": doc_id, "version": version, "op": "upsert", "text": text}
        events.append((doc_id.encode(), json.dumps(value).encode()))
        if doc_id not in latest or version > latest[doc_id][0]:  # equal version: the first one wins
            latest[doc_id] = (version, text)
    return events, latest


@pytest.mark.parametrize("trial", range(TRIALS))
def test_ingest_survives_random_sigkills(trial: int, tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker,
                                         encoder: OnnxEncoder) -> None:
    seed = 1000 * SEED + trial
    rng = random.Random(1000 + seed)
    namespace = f"crash-{trial}"
    events, latest = event_stream(seed, EVENTS)
    worker = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, namespace,
                           GRISTMILL_SESSION_TIMEOUT_S="6", GRISTMILL_STORE_COMPACT_INTERVAL_S="2").start()
    live = sum(1 for _, text in latest.values() if text is not None)
    kill_points = sorted(rng.uniform(0.05, 0.9) for _ in range(3))  # shares of the final live documents
    killed_at: list[int] = []  # live documents in the index at each kill
    try:
        produce(broker.bootstrap_servers, f"{namespace}.documents", events)
        for share in kill_points:  # SIGKILL mid-batch somewhere in the ingest, not only while it starts up
            worker.wait_for(lambda share=share: worker.get("/health")["index"]["documents"] >= share * live, 600,
                            f"{share:.0%} of the documents indexed")
            time.sleep(rng.uniform(0.0, 1.0))
            killed_at.append(worker.get("/health")["index"]["documents"])
            worker.stop(signal.SIGKILL)
            worker.start()
        doc_ids = sorted(latest)

        def converged() -> bool:
            import urllib.request

            request = urllib.request.Request(f"{worker.url}/documents/versions",
                                             headers={"Content-Type": "application/json"},
                                             data=json.dumps({"doc_ids": doc_ids}).encode())
            with urllib.request.urlopen(request, timeout=30) as response:
                versions = json.load(response)["versions"]
            return all(versions[d] == latest[d][0] for d in doc_ids)

        worker.wait_for(converged, 600, "every document at its final version")
        time.sleep(2)  # let the last batches' ledger writes and commits settle
    finally:
        worker.stop()
    chunker = Chunker(encoder.tokenizer, 128, 32, encoder.max_tokens)
    want = {(doc_id, c.number, version, c.text) for doc_id, (version, text) in latest.items() if text is not None
            for c in chunker.split(text)}
    store = EdgeVectorStore(worker.data_dir / "qdrant", f"{namespace}-chunks", encoder.dim)
    try:
        chunks = store.all_chunks()
        ledger = store.get_documents(sorted(latest))
    finally:
        store.close()
    for doc_id, (version, text) in latest.items():
        assert (ledger[doc_id].version, ledger[doc_id].deleted, ledger[doc_id].text) == (version, text is None, text)
    got = [(c.doc_id, c.chunk, c.version, c.text) for c in chunks]
    assert len(got) == len(set(got)) and set(got) == want  # no lost, no extra, no duplicate chunks
    assert len(killed_at) == 3, killed_at


def test_every_query_is_answered_across_a_sigkill(tmp_path: Path, registry_dir: Path,
                                                  broker: EmbeddedBroker) -> None:
    namespace = "crash-queries"
    worker = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, namespace,
                           GRISTMILL_SESSION_TIMEOUT_S="6").start()
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, namespace=namespace)
    try:
        produce(broker.bootstrap_servers, f"{namespace}.documents", [
            (b"d1", b'{"doc_id": "d1", "version": 1, "op": "upsert", "text": "Leaders handle partition writes."}')])
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 1, 60, "indexed")
        with QueryRoundTrip(settings) as roundtrip:
            sent = [roundtrip.send(f"who handles writes {i}", 1) for i in range(300)]
            time.sleep(0.5)
            worker.stop(signal.SIGKILL)
            worker.start()
            answers = roundtrip.wait(sent, 180)
    finally:
        worker.stop()
    assert set(answers) == set(sent)
    assert all(a.response["hits"][0]["doc_id"] == "d1" for a in answers.values())
