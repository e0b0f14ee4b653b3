"""Two `gristmill up` workers in one consumer group, each with its own data directory, sharing one PostgreSQL
database (`GRISTMILL_DATABASE_URL`): feedback on answers from either worker is joined, and either worker's
`/evaluation` counts every judged query. The server is stopped for 10 s while queries (Kafka and HTTP) and feedback
flow: the agents pause (`/health` says degraded, naming the store), HTTP searches are answered at once, and once it
is back every query is logged and every feedback joined exactly once — nothing is lost, nothing dead-lettered."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.postgres_server import PostgresServer
from streams.devtools.worker_process import WorkerProcess
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.evaluation_store import EvaluationStore
from streams.state.postgres import PostgresDatabase
from streams.state.query_log import QueryLog
from streams.state.training_pairs import TrainingPairs
from tests.kafka_io import produce

pytestmark = pytest.mark.integration

NAMESPACE = "postgres-state-it"
OUTAGE_S = 10.0


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped for the outage."""
    with PostgresServer(durable=False) as running:
        yield running


def answered(worker: WorkerProcess) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        found = re.search(r'gristmill_queries_total\{via="kafka"\} (\S+)', page.read().decode())
    return float(found.group(1)) if found else 0.0


def dead_letters(worker: WorkerProcess) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        return sum(float(value) for value in re.findall(r"^gristmill_deadletters_total\{[^}]*\} (\S+)$",
                                                         page.read().decode(), re.MULTILINE))


def judged_queries(worker: WorkerProcess) -> int:
    return sum(row.get("judged", 0) for row in worker.get("/evaluation", since="1h")["rows"])


def test_two_workers_share_one_database_and_a_server_restart_loses_nothing(
        tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker, server: PostgresServer) -> None:
    url = server.new_database()
    bootstrap = broker.bootstrap_servers
    env = {"GRISTMILL_DATABASE_URL": url, "GRISTMILL_DATABASE_TIMEOUT_S": "1", "GRISTMILL_STORE_RETRY_MAX_S": "1",
           "GRISTMILL_PARTITIONS": "4", "GRISTMILL_FEEDBACK_HOLD_S": "300",
           "GRISTMILL_RETRAIN_EVERY_POSITIVE_PAIRS": "100000"}
    workers = [WorkerProcess(tmp_path / name, registry_dir, bootstrap, NAMESPACE, **env).start()
               for name in ("a", "b")]
    settings = Settings(kafka_bootstrap_servers=bootstrap, namespace=NAMESPACE)
    try:
        # each worker indexes the documents of its partitions (its own embedded shard): produce until both hold some
        docs: list[str] = []
        deadline = time.monotonic() + 120
        while not all(any(w.get(f"/documents/{d}") for d in docs) for w in workers):
            assert time.monotonic() < deadline, "the group never settled with documents on both workers"
            wave = [f"note-{len(docs) + i}" for i in range(8)]
            docs += wave
            produce(bootstrap, f"{NAMESPACE}.documents", [(d.encode(), json.dumps(
                {"doc_id": d, "version": 1, "op": "upsert", "text": f"maintenance note {d}: replace the pump filter"}
            ).encode()) for d in wave])
            time.sleep(2)

        top_hits: dict[str, str] = {}

        def ask_and_judge(prefix: str, count: int) -> None:
            """Queries through Kafka (either worker answers, by partition), then a positive on each top hit."""
            ids = [f"{prefix}-{i}" for i in range(count)]
            with QueryRoundTrip(settings) as roundtrip:
                for query_id in ids:
                    roundtrip.send(f"replace the pump filter {query_id}", 3, query_id=query_id)
                responses = roundtrip.wait(ids, 120)
            hits = {q: a.response["hits"][0]["doc_id"] for q, a in responses.items() if a.response["hits"]}
            top_hits.update(hits)
            produce(bootstrap, f"{NAMESPACE}.feedback", [(q.encode(), json.dumps(
                {"query_id": q, "doc_id": d, "label": 1}).encode()) for q, d in hits.items()])

        waves = 0
        while waves == 0 or not all(answered(w) > 0 for w in workers):  # until both workers answered some
            assert waves < 10, "one worker answered every query"
            ask_and_judge(f"before{waves}", 12)
            waves += 1

        # the outage: queries and feedback keep coming while the server is stopped for 10 s
        server.stop()
        stopped = time.monotonic()
        degraded: list[dict[str, object]] = []

        def watch_health() -> None:
            while time.monotonic() - stopped < OUTAGE_S - 1 and not degraded:
                health = workers[0].get("/health")
                if health["status"] == "degraded":
                    degraded.append(health)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_health)
        watcher.start()
        during = threading.Thread(target=ask_and_judge, args=("during", 24))
        during.start()
        watcher.join()
        # searches over HTTP meanwhile: answered at once, logged once the server is back
        http_ids = [workers[i % 2].get("/search", q=f"pump filter {i}", k=2)["query_id"] for i in range(6)]
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        server.start()
        during.join(180)
        assert not during.is_alive(), "queries sent during the outage were never answered"
        assert degraded, "/health never said degraded while the database was away"
        print(f"health during the outage: {degraded[0]}")

        query_ids = ({f"before{w}-{i}" for w in range(waves) for i in range(12)} | {f"during-{i}" for i in range(24)}
                     | set(http_ids))
        log = QueryLog(PostgresDatabase(url, "query log", namespace=NAMESPACE))
        evaluation = EvaluationStore(PostgresDatabase(url, "evaluation store", namespace=NAMESPACE))
        pairs = TrainingPairs(PostgresDatabase(url, "feedback state", namespace=NAMESPACE))
        try:
            workers[0].wait_for(lambda: log.count() == len(query_ids), 120, "every query logged")
            assert {q for q in query_ids if log.get(q) is not None} == query_ids
            workers[0].wait_for(lambda: len(evaluation.judgements(top_hits)) == len(top_hits), 120,
                                "every feedback joined")
            assert evaluation.judgements(top_hits) == {q: {d: 1} for q, d in top_hits.items()}
            workers[0].wait_for(lambda: pairs.count("positive") == len(top_hits), 60, "every positive paired")
            assert {(p.query_id, p.doc_id) for p in pairs.pairs() if p.kind == "positive"} == set(top_hits.items())
            assert pairs.held() == []  # every feedback joined, none still waiting
        finally:
            log.close()
            evaluation.close()
            pairs.close()
        for worker in workers:  # either worker's /evaluation counts every judged query
            worker.wait_for(lambda w=worker: judged_queries(w) == len(top_hits), 60,  # type: ignore[misc]
                            "every judged query counted")
            worker.wait_for(lambda w=worker: w.get("/health")["status"] == "ok", 60,  # type: ignore[misc]
                            "health ok again")
            assert "Traceback" not in worker.log() and " ERROR " not in worker.log()
        assert sum(dead_letters(w) for w in workers) == 0
    finally:
        for worker in workers:
            worker.stop()
