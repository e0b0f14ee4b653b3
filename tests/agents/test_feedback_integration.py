"""Feedback through a real worker: joined with logged responses (even when it arrives first), turned into
training pairs, dead-lettered when it can never be joined, and a `retrain` when enough positives arrived."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.training_pairs import TrainingPairs
from tests.kafka_io import consume_all, produce

pytestmark = pytest.mark.integration

NAMESPACE = "feedback-it"
DOCS = {"tea": "Green tea is steeped at about 80 degrees Celsius.", "coffee": "Espresso is brewed at 93 degrees.",
        "bikes": "Oil a bicycle chain every few hundred kilometres."}


def feedback(query_id: str, doc_id: str, **judgement: int) -> tuple[bytes, bytes]:
    return query_id.encode(), json.dumps({"query_id": query_id, "doc_id": doc_id, **judgement}).encode()


def test_feedback_becomes_pairs_and_a_retrain(tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> None:
    bootstrap = broker.bootstrap_servers
    worker = WorkerProcess(tmp_path / "data", registry_dir, bootstrap, NAMESPACE, GRISTMILL_FEEDBACK_HOLD_S="4",
                           GRISTMILL_RETRAIN_EVERY_POSITIVE_PAIRS="2", GRISTMILL_RETRAIN_MIN_INTERVAL_S="3600").start()
    try:
        produce(bootstrap, f"{NAMESPACE}.documents", [
            (d.encode(), json.dumps({"doc_id": d, "version": 1, "op": "upsert", "text": t}).encode())
            for d, t in DOCS.items()])
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 3, 60, "documents indexed")
        settings = Settings(kafka_bootstrap_servers=bootstrap, namespace=NAMESPACE)
        # feedback for q-early arrives before its query: it waits, then joins
        produce(bootstrap, f"{NAMESPACE}.feedback", [feedback("q-early", "coffee", rating=5)])
        with QueryRoundTrip(settings) as roundtrip:
            roundtrip.send("hot drink temperatures", 3, query_id="q-early")
            roundtrip.send("how hot for green tea", 3, query_id="q-tea")
            roundtrip.wait(["q-early", "q-tea"], 60)
        judge = [sys.executable, "-m", "streams", "produce", "feedback", "q-tea", "tea", "--label", "1"]
        by_cli = subprocess.run(judge, env=worker.env, capture_output=True, text=True, timeout=60)
        assert by_cli.returncode == 0, by_cli.stdout + by_cli.stderr
        produce(bootstrap, f"{NAMESPACE}.feedback", [
            feedback("q-tea", "bikes", label=-1),
            feedback("q-never-asked", "tea", label=1),  # no query will ever be logged: dead letter after 4 s
            feedback("q-tea", "no-such-doc", label=1),  # unknown document: dead letter at once
            (b"q-bad", b'{"query_id": "q-bad", "doc_id": "tea"}'),  # no judgement: invalid
        ])
        (request,) = consume_all(bootstrap, f"{NAMESPACE}.retrain", 1, timeout_s=60)
        assert request["reason"] == "feedback" and request["pairs"] >= 2
        letters = consume_all(bootstrap, f"{NAMESPACE}.deadletter", 3, timeout_s=60)
        reasons = sorted(letter["errors"][0]["loc"] + ": " + letter["errors"][0]["msg"] for letter in letters)
        assert reasons[0].startswith("doc_id: unknown document") and reasons[1].startswith("query_id: no logged")
        assert reasons[2].startswith("value:") and "exactly one of" in reasons[2]

        manual = subprocess.run([sys.executable, "-m", "streams", "retrain"], env=worker.env, capture_output=True,
                                text=True, timeout=60)
        assert manual.returncode == 0, manual.stdout + manual.stderr
        retrains = consume_all(bootstrap, f"{NAMESPACE}.retrain", 2, timeout_s=60)
        # the two requests may sit on different partitions: no order between them
        assert sorted(r["reason"] for r in retrains) == ["feedback", "manual"]
    finally:
        worker.stop()
    pairs = TrainingPairs(worker.data_dir / "feedback.sqlite3")
    try:
        tea = {(p.doc_id, p.kind, p.source) for p in pairs.for_query("q-tea")}
        assert ("tea", "positive", "feedback") in tea and ("bikes", "negative", "feedback") in tea
        early = [(p.doc_id, p.kind, p.query) for p in pairs.for_query("q-early")]
        assert ("coffee", "positive", "hot drink temperatures") in early
        assert pairs.held() == [] and [r["reason"] for r in pairs.retrains()] == ["feedback"]
    finally:
        pairs.close()
