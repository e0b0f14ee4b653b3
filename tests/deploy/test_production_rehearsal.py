"""A production rehearsal: compose's topology as processes on this machine. One broker; three workers (the README's
`docker compose up --scale worker=3`) and a trainer, each a `gristmill up` process with compose's roles
(`GRISTMILL_AGENTS`) and its environment (one registry and one shared directory for all four). Queries and feedback
stream through Kafka all along while an operator runs a retrain, a shadow experiment, a promotion, a rollback and
two promotions back to back, and one worker is stopped with SIGTERM mid-stream and started again.

No Qdrant server runs here, so each process keeps its own embedded store: each worker indexes the documents of its
partitions, and the trainer keeps a copy of the whole index from `documents` (`streams.index_replica`). README,
"The production rehearsal", says what this covers and what only a real compose run does."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.demo.catalog import code_queries, products
from streams.devtools.worker_process import WorkerProcess
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.registry import LocalModelRegistry
from streams.state.training_pairs import TrainingPairs
from tests.kafka_io import consume_all, produce

pytestmark = [pytest.mark.production, pytest.mark.integration]

NAMESPACE = "rehearsal"
CATALOG = products(24)
QUERIES = code_queries(CATALOG)
WORKER_AGENTS = "ingest,query,monitor,feedback,rollout,experiment"  # docker-compose.yml, x-worker-env
ENV = {
    "GRISTMILL_PARTITIONS": "6",  # compose has 12; any count 3 divides gives each of the 3 workers a share
    "GRISTMILL_ADMIN_TOKEN": "rehearsal-admin",
    "GRISTMILL_RETRAIN_EVERY_POSITIVE_PAIRS": "100000",  # the operator asks for the retrain
    "GRISTMILL_TRAINER_MIN_POSITIVE_PAIRS": "5",
    "GRISTMILL_TRAINER_EPOCHS": "1",
    "GRISTMILL_PROMOTION_MARGIN": "1.5",  # the candidate is rejected: the operator decides what serves
    "GRISTMILL_ROLLOUT_STEP_DOCUMENTS": "4",
    "GRISTMILL_ROLLOUT_RETIRE_AFTER_S": "2",
    "GRISTMILL_EXPERIMENT_CHECK_S": "1",
    "GRISTMILL_LOG_LEVEL": "INFO",
}


class Traffic(threading.Thread):
    """Users: waves of queries through Kafka, each answer's top hit judged (good when it is the product asked for)
    and the judgement produced to `feedback`, until stopped."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.stopping = threading.Event()
        self.answers: dict[str, dict[str, Any]] = {}
        self.judged: dict[str, tuple[str, int]] = {}  # query_id -> (doc_id, label)
        self.errors: list[BaseException] = []

    def run(self) -> None:
        wave = 0
        try:
            with QueryRoundTrip(self.settings) as roundtrip:
                while not self.stopping.is_set():
                    asked = {f"w{wave}-{q.query_id}": q for q in QUERIES[wave * 6 % len(QUERIES):][:6]}
                    for i, (query_id, q) in enumerate(asked.items()):
                        roundtrip.send(q.text, 5, query_id=query_id, user_id=f"user-{(wave + i) % 20}")
                    answers = roundtrip.wait(asked, 180)
                    feedback = []
                    for query_id, q in asked.items():
                        response = self.answers[query_id] = answers[query_id].response
                        if not response["hits"]:  # (a worker whose partitions hold no document yet)
                            continue
                        top = response["hits"][0]["doc_id"]
                        self.judged[query_id] = (top, 1 if top == q.doc_id else -1)
                        feedback.append((query_id.encode(), json.dumps(
                            {"query_id": query_id, "doc_id": top, "label": self.judged[query_id][1]}).encode()))
                    produce(self.settings.kafka_bootstrap_servers, f"{NAMESPACE}.feedback", feedback)
                    wave += 1
                    time.sleep(0.3)
        except BaseException as exc:
            self.errors.append(exc)


class Searches(threading.Thread):
    """HTTP searches against one worker all along: the (model, index) pair of every answer."""

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.stopping = threading.Event()
        self.pairs: list[tuple[str, str]] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            query = QUERIES[len(self.pairs) % len(QUERIES)].text
            try:
                with urllib.request.urlopen(f"{self.worker.url}/search?" + urllib.parse.urlencode(
                        {"q": query, "k": 3}), timeout=30) as response:
                    body = json.load(response)
            except (urllib.error.URLError, OSError) as exc:
                self.errors.append(exc)
                continue
            self.pairs.append((body["model_version"], body["index_version"]))
            time.sleep(0.05)


def private_registry(tmp_path: Path, registry_dir: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(registry_dir / "minilm" / "v1", root / "minilm" / "v1")
    (root / "minilm" / "CURRENT").write_text("v1\n")
    (root / "minilm" / "HISTORY").write_text("v1\t0\n")
    return root


def cli(process: WorkerProcess, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streams", *args], env=process.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def serving(process: WorkerProcess) -> tuple[str, str]:
    health = process.get("/health")
    return health["model_version"], health["index_version"]


def test_the_compose_topology_as_processes(tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> None:
    bootstrap = broker.bootstrap_servers
    registry = private_registry(tmp_path, registry_dir)
    shared = tmp_path / "shared"
    shared.mkdir()
    env = {**ENV, "GRISTMILL_SHARED_DIR": str(shared)}
    workers = [WorkerProcess(tmp_path / name, registry, bootstrap, NAMESPACE, GRISTMILL_AGENTS=WORKER_AGENTS, **env)
               for name in ("worker-1", "worker-2", "worker-3")]
    trainer = WorkerProcess(tmp_path / "trainer", registry, bootstrap, NAMESPACE, GRISTMILL_AGENTS="trainer", **env)
    processes = [*workers, trainer]
    settings = Settings(kafka_bootstrap_servers=bootstrap, namespace=NAMESPACE)
    traffic, searches = Traffic(settings), Searches(workers[0])
    try:
        for process in processes:
            process.start()
        for version in range(1, 6):  # until the group has settled with documents on both workers
            produce(bootstrap, f"{NAMESPACE}.documents", [(p.doc_id.encode(), json.dumps(
                {"doc_id": p.doc_id, "version": version, "op": "upsert", "text": p.text}).encode()) for p in CATALOG])
            try:
                workers[0].wait_for(lambda: all(w.get("/health")["index"]["documents"] for w in workers), 20,
                                    "documents on both workers")
                break
            except TimeoutError:
                assert version < 5, "the documents stayed on one worker"
        trainer.wait_for(lambda: trainer.get("/health")["index"]["documents"] == len(CATALOG), 120,
                         "the trainer's copy of the whole index")
        workers[0].wait_for(lambda: sum(w.get("/health")["index"]["documents"] for w in workers) >= len(CATALOG),
                            120, "every document indexed by the worker of its partition")
        traffic.start()
        searches.start()
        pairs = TrainingPairs(shared / "feedback.sqlite3")
        try:
            workers[0].wait_for(lambda: pairs.count("positive") >= 10 or traffic.errors, 180,
                                "judged answers turned into training pairs")
            assert not traffic.errors, traffic.errors
        finally:
            pairs.close()

        # a retrain on the trainer process: a candidate, rejected (the margin), registered as v2
        cli(trainer, "retrain")
        decisions = consume_all(bootstrap, f"{NAMESPACE}.model-updates", 2, timeout_s=300)
        assert [d["status"] for d in decisions] == ["candidate", "rejected"], decisions
        assert decisions[1]["version"] == "v2" and decisions[1]["metrics"]["held_out_index_chunks"] >= len(CATALOG)

        # a shadow experiment of v2; one worker is stopped mid-stream with SIGTERM and started again meanwhile
        cli(workers[0], "experiment", "start", "v2", "--mode", "shadow", "--fraction", "1.0")
        for worker in workers:
            worker.wait_for(lambda w=worker: (w.get("/experiment")["latest"] or {}).get("experiment", {})
                            .get("state") == "running", 120, "the shadow experiment running")
        answered = len(traffic.answers)
        workers[1].wait_for(lambda: len(traffic.answers) >= answered + 12 or traffic.errors, 120,
                            "traffic during the experiment")
        started = time.monotonic()
        code = workers[1].stop(signal.SIGTERM)
        took = time.monotonic() - started
        print(f"SIGTERM mid-stream: worker exited with {code} in {took:.1f}s")
        assert code == 0 and took < 30 and "ERROR" not in workers[1].log(), workers[1].log()[-3000:]
        answered = len(traffic.answers)
        workers[0].wait_for(lambda: len(traffic.answers) >= answered + 12 or traffic.errors, 120,
                            "the other worker taking the stopped one's partitions")
        workers[1].start()
        cli(workers[0], "experiment", "stop")
        workers[0].wait_for(lambda: workers[0].get("/experiment")["latest"]["experiment"]["state"] == "stopped",
                            120, "the experiment stopped")

        # an operator promotes v2, then rolls back: every process ends on what the operator did last
        cli(workers[0], "promote", "v2")
        for process in processes:
            process.wait_for(lambda p=process: serving(p) == ("v2", "v2"), 180, "v2 serving everywhere")
        answered = len(traffic.answers)
        workers[0].wait_for(lambda: len(traffic.answers) >= answered + 12 or traffic.errors, 120, "traffic on v2")
        cli(workers[0], "rollback")
        for process in processes:
            process.wait_for(lambda p=process: serving(p) == ("v1", "v1"), 180, "v1 serving everywhere again")
        answered = len(traffic.answers)
        workers[0].wait_for(lambda: len(traffic.answers) >= answered + 12 or traffic.errors, 120, "traffic on v1")

        # two promotions sent back to back (the second before the first is rolled out): the second wins everywhere
        models = LocalModelRegistry(registry, "minilm")
        before = [v for v, _ in models.history()]
        cli(workers[0], "promote", "v2")
        cli(workers[0], "promote", "v1")
        workers[0].wait_for(lambda: [v for v, _ in models.history()] == [*before, "v2", "v1"], 180,
                            "both promotions applied in the log's order")
        for process in processes:
            process.wait_for(lambda p=process: serving(p) == ("v1", "v1"), 180, "v1 serving everywhere at the end")
        traffic.stopping.set()
        searches.stopping.set()
        traffic.join(200)
        searches.join(30)

        # every query answered, each answer from one (model, index) pair
        assert not traffic.errors, traffic.errors
        assert len(traffic.answers) >= 60
        assert {(a["model_version"], a["index_version"]) for a in traffic.answers.values()} <= {("v1", "v1"),
                                                                                                 ("v2", "v2")}
        assert {"v1", "v2"} <= {a["model_version"] for a in traffic.answers.values()}
        assert not searches.errors, searches.errors[:3]
        assert len(searches.pairs) > 20 and set(searches.pairs) <= {("v1", "v1"), ("v2", "v2")}, set(searches.pairs)

        # every judgement joined once: one feedback pair per judged answer with its label, none held, none dead
        pairs = TrainingPairs(shared / "feedback.sqlite3")
        try:
            def joined() -> dict[tuple[str, str], str]:
                return {(p.query_id, p.doc_id): p.kind for p in pairs.pairs() if p.source == "feedback"}

            expected = {(q, d): "positive" if label > 0 else "negative" for q, (d, label) in traffic.judged.items()}
            workers[0].wait_for(lambda: joined() == expected and not pairs.held(), 120, "every judgement joined")
        finally:
            pairs.close()
        letters = consume_all(bootstrap, f"{NAMESPACE}.deadletter", 1, timeout_s=5)
        assert letters == [], letters

        # the registry pointer is the operator's last action; nothing jammed
        pointer = LocalModelRegistry(registry, "minilm").pointer()
        assert pointer is not None and pointer.version == "v1"
        for process in processes:
            health = process.get("/health")
            assert health["status"] == "ok" and not health.get("failing_stores"), health
            assert "ERROR" not in process.log(), process.log()[-3000:]
    finally:
        traffic.stopping.set()
        searches.stopping.set()
        for process in processes:
            process.stop()
