"""The feedback flywheel end to end on the embedded stack: searches by internal part codes the base model
cannot know, feedback on them, a retrain, a fine-tuned candidate evaluated on held-out queries, a blue/green
rollout, and a rollback; a rejected candidate and a killed training run leave serving untouched, then live
experiments decide: a split promotes the (better) candidate by itself and a shadow of the worse model is stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.demo.catalog import CodeQuery, code_queries, products
from streams.devtools.worker_process import WorkerProcess
from streams.ml.ranking import ndcg_at
from streams.ml.training import held_out
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.training_pairs import TrainingPairs
from tests.kafka_io import consume_all, produce

pytestmark = pytest.mark.integration

CATALOG = products(24)
QUERIES = code_queries(CATALOG)
HELD_OUT_FRACTION = 0.25
HELD_OUT = [q for q in QUERIES if held_out(q.query_id, HELD_OUT_FRACTION)]


def private_registry(tmp_path: Path, registry_dir: Path) -> Path:
    """A registry of its own holding only the base version (tests elsewhere share the cached one)."""
    root = tmp_path / "models"
    shutil.copytree(registry_dir / "minilm" / "v1", root / "minilm" / "v1")
    (root / "minilm" / "CURRENT").write_text("v1\n")
    (root / "minilm" / "HISTORY").write_text("v1\t0\n")
    return root


def start_worker(tmp_path: Path, registry: Path, broker: EmbeddedBroker, namespace: str, **env: str
                 ) -> WorkerProcess:
    return WorkerProcess(tmp_path / "data", registry, broker.bootstrap_servers, namespace,
                         GRISTMILL_RETRAIN_EVERY_POSITIVE_PAIRS="100000", GRISTMILL_TRAINER_EPOCHS="2",
                         GRISTMILL_TRAINER_HELD_OUT_FRACTION=str(HELD_OUT_FRACTION),
                         GRISTMILL_ROLLOUT_STEP_DOCUMENTS="2", GRISTMILL_ROLLOUT_RETIRE_AFTER_S="2",
                         GRISTMILL_ADMIN_TOKEN="s3cret", **env).start()


def ask(settings: Settings, queries: list[CodeQuery], prefix: str) -> dict[str, dict[str, Any]]:
    with QueryRoundTrip(settings) as roundtrip:
        for q in queries:
            roundtrip.send(q.text, 10, query_id=f"{prefix}{q.query_id}")
        answers = roundtrip.wait([f"{prefix}{q.query_id}" for q in queries], 120)
    return {q.query_id: answers[f"{prefix}{q.query_id}"].response for q in queries}


def served_ndcg(responses: dict[str, dict[str, Any]], queries: list[CodeQuery]) -> float:
    def ranking(response: dict[str, Any]) -> list[str]:
        return list(dict.fromkeys(hit["doc_id"] for hit in response["hits"]))

    return statistics.fmean(ndcg_at(ranking(responses[q.query_id]), {q.doc_id: 1}, 10) for q in queries)


def teach(worker: WorkerProcess, broker: EmbeddedBroker, namespace: str) -> dict[str, dict[str, Any]]:
    """Index the catalogue, search every code phrasing through Kafka, judge the right product for each."""
    bootstrap = broker.bootstrap_servers
    produce(bootstrap, f"{namespace}.documents", [
        (p.doc_id.encode(), json.dumps({"doc_id": p.doc_id, "version": 1, "op": "upsert", "text": p.text}).encode())
        for p in CATALOG])
    worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == len(CATALOG), 60, "catalogue indexed")
    before = ask(Settings(kafka_bootstrap_servers=bootstrap, namespace=namespace), QUERIES, "")
    produce(bootstrap, f"{namespace}.feedback", [
        (q.query_id.encode(), json.dumps({"query_id": q.query_id, "doc_id": q.doc_id, "label": 1}).encode())
        for q in QUERIES])
    pairs = TrainingPairs(worker.data_dir / "feedback.sqlite3")
    try:
        worker.wait_for(lambda: pairs.count("positive") == len(QUERIES), 60, "every judgement turned into a pair")
    finally:
        pairs.close()
    return before


def updates(bootstrap: str, namespace: str, count: int) -> list[dict[str, Any]]:
    return consume_all(bootstrap, f"{namespace}.model-updates", count, timeout_s=240)


def cli(worker: WorkerProcess, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streams", *args], env=worker.env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_feedback_retrains_rolls_out_and_rolls_back(tmp_path: Path, registry_dir: Path,
                                                     broker: EmbeddedBroker) -> None:
    namespace = "flywheel"
    bootstrap = broker.bootstrap_servers
    worker = start_worker(tmp_path, private_registry(tmp_path, registry_dir), broker, namespace,
                          GRISTMILL_PROMOTION_MARGIN="0.05")
    settings = Settings(kafka_bootstrap_servers=bootstrap, namespace=namespace)
    pairs_seen: list[tuple[str, str]] = []
    hammering = threading.Event()

    def hammer() -> None:  # HTTP searches all through the retrain and the rollout
        while not hammering.is_set():
            url = f"{worker.url}/search?" + urllib.parse.urlencode({"q": HELD_OUT[len(pairs_seen) % len(HELD_OUT)]
                                                                    .text, "k": 3})
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
            pairs_seen.append((body["model_version"], body["index_version"]))

    try:
        before = teach(worker, broker, namespace)
        searcher = threading.Thread(target=hammer, daemon=True)
        searcher.start()
        cli(worker, "retrain")

        def fine_tuning() -> dict[str, Any] | None:  # the run shows its phase, done of total and an ETA
            progress = (worker.get("/health")["trainer"] or {}).get("progress") or {}
            return progress if progress.get("phase") == "fine-tune" and progress["done"] > 0 else None

        progress = worker.wait_for(fine_tuning, 180, "fine-tuning progress on /health")
        assert progress["unit"] == "steps" and 0 < progress["done"] <= progress["total"] and progress["step"] == 4
        assert set(progress["phase_seconds"]) == {"load", "index", "evaluate-serving"}
        candidate, decision = updates(bootstrap, namespace, 2)
        assert candidate["status"] == "candidate" and decision["status"] == "promoted", decision
        assert decision["version"] == "v2" and decision["previous_version"] == "v1"
        metrics = decision["metrics"]
        assert metrics["candidate_nDCG@10"] > metrics["current_nDCG@10"] + 0.2, metrics
        assert decision["trained_on"]["feedback_offsets"] and decision["trained_on"]["pairs"] > len(QUERIES)

        worker.wait_for(lambda: worker.get("/health")["index_version"] == "v2", 120, "rollout to v2")
        health = worker.get("/health")
        assert health["model_version"] == "v2" and health["rollout"]["state"] == "switched"
        assert health["index"]["documents"] == len(CATALOG)
        after = ask(settings, HELD_OUT, "after-")
        assert {(r["model_version"], r["index_version"]) for r in after.values()} == {("v2", "v2")}
        ndcg_before, ndcg_after = served_ndcg(before, HELD_OUT), served_ndcg(after, HELD_OUT)
        print(f"held-out served nDCG@10 {ndcg_before:.4f} -> {ndcg_after:.4f} ({len(HELD_OUT)} queries)")
        assert ndcg_after > ndcg_before + 0.2

        manifest = json.loads((tmp_path / "models" / "minilm" / "v2" / "manifest.json").read_text())
        assert manifest["lineage"]["base_version"] == "v1" and manifest["lineage"]["hyperparameters"]["epochs"] == 2
        assert set(manifest["lineage"]["phase_seconds"]) == {"load", "index", "evaluate-serving", "fine-tune",
                                                             "export", "embed-candidate", "evaluate-candidate"}
        assert metrics["held_out_index_chunks"] >= len(CATALOG)  # ranked over the serving index's chunks
        assert "feedback" in " ".join(manifest["lineage"]["feedback_offsets"])

        # a document written after the switch is in the v2 index; rollback re-embeds it into v1's collection
        late = {"doc_id": "late", "version": 1, "op": "upsert", "text": "A late arrival: solar garden lights."}
        produce(bootstrap, f"{namespace}.documents", [(b"late", json.dumps(late).encode())])
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == len(CATALOG) + 1, 60, "late doc")
        cli(worker, "rollback")
        worker.wait_for(lambda: worker.get("/health")["index_version"] == "v1", 120, "rollback to v1")
        assert worker.get("/health")["index"]["documents"] == len(CATALOG) + 1
        hits = worker.get("/search", q="solar garden lights", k=1)
        assert hits["hits"][0]["doc_id"] == "late" and hits["model_version"] == hits["index_version"] == "v1"
        assert "rollout v2 -> v1: switched" in cli(worker, "status")
    finally:
        hammering.set()
        worker.stop()
    assert len(pairs_seen) > 20 and set(pairs_seen) <= {("v1", "v1"), ("v2", "v2")}, set(pairs_seen)
    assert ("v2", "v2") in pairs_seen


def test_rejected_candidate_and_killed_training_leave_serving_alone(tmp_path: Path, registry_dir: Path,
                                                                   broker: EmbeddedBroker) -> None:
    namespace = "flywheel-reject"
    bootstrap = broker.bootstrap_servers
    worker = start_worker(tmp_path, private_registry(tmp_path, registry_dir), broker, namespace,
                          GRISTMILL_PROMOTION_MARGIN="1.5",  # no candidate can gain more than 1.0
                          GRISTMILL_EXPERIMENT_MIN_JUDGED="20", GRISTMILL_EXPERIMENT_CHECK_S="1",
                          # decisions on quality here (a loaded test machine makes latency noise; unit-tested)
                          GRISTMILL_EXPERIMENT_GUARDRAIL_LATENCY_RATIO="1000")
    try:
        teach(worker, broker, namespace)
        cli(worker, "retrain")
        trainer = worker.wait_for(lambda: (worker.get("/health")["trainer"] or {}).get("pid"), 60, "training run")
        os.kill(trainer, signal.SIGKILL)  # the trainer dies mid-training; the worker keeps serving
        answer = worker.get("/search", q=HELD_OUT[0].text, k=3)
        assert answer["model_version"] == "v1" and len(answer["hits"]) == 3
        candidate, decision = updates(bootstrap, namespace, 2)
        assert (candidate["status"], decision["status"]) == ("candidate", "rejected"), decision
        assert "margin 1.5" in decision["reason"]
        health = worker.get("/health")
        assert health["trainer"]["last"]["status"] == "rejected" and health["trainer"]["state"] == "idle"
        assert health["model_version"] == health["index_version"] == "v1" and health["rollout"] is None
        assert "training attempt 1/3 exited" in worker.log()

        # live traffic decides instead: a split of the rejected (but, on part codes, better) candidate promotes
        # it by itself; then a shadow of the base model, worse on them, is stopped and never serves
        cli(worker, "experiment", "start", "v2", "--mode", "split", "--fraction", "0.5")
        worker.wait_for(lambda: experiment_state(worker) == "running", 120, "the split running")
        settings = Settings(kafka_bootstrap_servers=bootstrap, namespace=namespace)
        judge_by_users(settings, bootstrap, namespace, "split-")
        worker.wait_for(lambda: experiment_state(worker) == "promoted", 120, "the split deciding")
        worker.wait_for(lambda: worker.get("/health")["index_version"] == "v2", 120, "the decision rolled out")
        evidence = worker.get("/experiment")["latest"]["experiment"]["evidence"]
        assert evidence["mrr@10_low"] > 0 and evidence["judged_candidate"] >= 20, evidence
        cli(worker, "experiment", "start", "v1", "--mode", "shadow", "--fraction", "1.0")
        worker.wait_for(lambda: experiment_state(worker) == "running", 120, "the shadow running")
        responses = judge_by_users(settings, bootstrap, namespace, "shadow-")
        assert {r["model_version"] for r in responses} == {"v2"}  # clients got the serving answers
        worker.wait_for(lambda: experiment_state(worker) == "stopped", 120, "the shadow stopped")
        assert worker.get("/health")["model_version"] == "v2"
        decisions = [u["status"] for u in updates(bootstrap, namespace, 6)]
        assert decisions[2:] == ["experiment", "promoted", "experiment", "stopped"], decisions

        # an operator can still promote any registered version, with the admin token only
        request = urllib.request.Request(f"{worker.url}/admin/promote", data=b'{"version": "v1"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        request.add_header("Authorization", "Bearer s3cret")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        worker.wait_for(lambda: worker.get("/health")["index_version"] == "v1", 120, "operator promotion")
    finally:
        worker.stop()


def experiment_state(worker: WorkerProcess) -> str | None:
    latest = worker.get("/experiment")["latest"]
    return latest["experiment"]["state"] if latest else None


def judge_by_users(settings: Settings, bootstrap: str, namespace: str, prefix: str) -> list[dict[str, Any]]:
    """Every code phrasing asked by one of 30 users through Kafka; each user marks the top hit good when it is
    the product asked for, bad otherwise."""
    with QueryRoundTrip(settings) as roundtrip:
        for i, q in enumerate(QUERIES):
            roundtrip.send(q.text, 10, query_id=f"{prefix}{q.query_id}", user_id=f"user-{i % 30}",
                           segment="codes")
        answers = roundtrip.wait([f"{prefix}{q.query_id}" for q in QUERIES], 120)
    feedback = []
    for q in QUERIES:
        query_id = f"{prefix}{q.query_id}"
        top = answers[query_id].response["hits"][0]["doc_id"]
        feedback.append((query_id.encode(), json.dumps({"query_id": query_id, "doc_id": top,
                                                        "label": 1 if top == q.doc_id else -1}).encode()))
    produce(bootstrap, f"{namespace}.feedback", feedback)
    return [answers[f"{prefix}{q.query_id}"].response for q in QUERIES]
