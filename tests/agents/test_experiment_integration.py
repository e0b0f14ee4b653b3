"""A live experiment through the real worker on the embedded broker: started and stopped from the CLI over
`model-updates`, queries answered per arm through Kafka, feedback judged into the evaluation store, and a worker
restart in the middle that loses neither the store nor the experiment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from streams.state.registry import LocalModelRegistry
from tests.conftest import MODEL_NAME
from tests.kafka_io import consume_all, produce

pytestmark = pytest.mark.integration

NAMESPACE = "exp-it"
DOCS = {"tea": "Green tea is steeped at about 80 degrees Celsius for two minutes.",
        "bikes": "A bicycle chain should be cleaned and oiled every few hundred kilometres.",
        "kafka": "Kafka topics are split into partitions; a key always maps to the same partition.",
        "volcano": "Lava is molten rock that flows out of a volcano during an eruption."}
QUESTIONS = {"how hot should green tea be": "tea", "oiling a bike chain": "bikes",
             "where does a keyed record go": "kafka", "molten rock from a mountain": "volcano"}


def cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], env={**worker.env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=120, cwd=worker.data_dir)


def ask_and_judge(worker: WorkerProcess, bootstrap: str, prefix: str, seen: int) -> list[dict]:
    """Forty queries from twenty users, then each user's judgement of the top hit; returns the responses."""
    queries = []
    for i in range(40):
        text = list(QUESTIONS)[i % len(QUESTIONS)]
        queries.append({"query_id": f"{prefix}-{i}", "text": text, "top_k": 2, "user_id": f"user-{i % 20}",
                        "segment": "web" if i % 2 else "app"})
    produce(bootstrap, f"{NAMESPACE}.queries", [(q["query_id"].encode(), json.dumps(q).encode()) for q in queries])
    expected, mine = seen + len(queries), {}
    for _ in range(5):  # read until every one of ours arrived (a re-delivered answer may repeat an older one)
        mine = {r["query_id"]: r for r in consume_all(bootstrap, f"{NAMESPACE}.responses", expected, 60)
                if r["query_id"].startswith(f"{prefix}-")}
        if len(mine) == len(queries):
            break
        expected += len(queries) - len(mine)
    responses = list(mine.values())
    assert len(responses) == len(queries)
    feedback = []
    for response in responses:
        text = queries[int(response["query_id"].rsplit("-", 1)[1])]["text"]
        top = response["hits"][0]["doc_id"]
        feedback.append({"query_id": response["query_id"], "doc_id": top, "label": 1 if top == QUESTIONS[text]
                         else -1})
    produce(bootstrap, f"{NAMESPACE}.feedback", [(f["query_id"].encode(), json.dumps(f).encode()) for f in feedback])
    return responses


def test_a_split_experiment_from_the_cli_survives_a_restart_and_is_stopped(
        tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> None:
    registry_copy = tmp_path / "models"
    shutil.copytree(registry_dir, registry_copy)
    registry = LocalModelRegistry(registry_copy, MODEL_NAME)
    base = registry.current()
    assert base is not None
    staging = tmp_path / "staging"
    shutil.copytree(base.path, staging, ignore=shutil.ignore_patterns("manifest.json", "model.int8.onnx"))
    candidate = registry.register(staging, source=base.source, facts={"dim": base.dim, "max_tokens": base.max_tokens})
    worker = WorkerProcess(tmp_path / "data", registry_copy, broker.bootstrap_servers, NAMESPACE,
                           GRISTMILL_EXPERIMENT_CHECK_S="1", GRISTMILL_EXPERIMENT_MIN_JUDGED="1000",
                           GRISTMILL_EXPERIMENT_GUARDRAIL_LATENCY_RATIO="1000").start()  # never decides here
    try:
        produce(broker.bootstrap_servers, f"{NAMESPACE}.documents", [
            (d.encode(), json.dumps({"doc_id": d, "version": 1, "op": "upsert", "text": t}).encode())
            for d, t in DOCS.items()])
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == len(DOCS), 60, "docs indexed")

        started = cli(worker, "experiment", "start", candidate.version, "--mode", "split", "--fraction", "0.5")
        assert started.returncode == 0, started.stdout + started.stderr
        worker.wait_for(lambda: worker.get("/experiment")["latest"]["experiment"]["state"] == "running", 120,
                        "the challenger built and the experiment running")
        again = cli(worker, "experiment", "start", candidate.version)
        assert again.returncode == 1 and "one experiment per model" in again.stdout
        assert len(again.stdout.strip().splitlines()) == 1  # one line, no traceback

        responses = ask_and_judge(worker, broker.bootstrap_servers, "a", 0)
        assert {(r["arm"], r["model_version"]) for r in responses} == {("serving", base.version),
                                                                       ("candidate", candidate.version)}
        by_user: dict[str, set[str]] = {}
        for r in responses:
            by_user.setdefault(str(int(r["query_id"].split("-")[1]) % 20), set()).add(r["arm"])
        assert all(len(arms) == 1 for arms in by_user.values())  # a user stays on one side

        def judged() -> dict:
            rows = worker.get("/evaluation", by="arm")["rows"]
            return {r["arm"]: r["judged"] for r in rows}
        worker.wait_for(lambda: sum(judged().values()) == 40, 60, "every judgement joined to its arm")
        before = judged()

        worker.stop()  # a restart in the middle of the experiment
        worker.start()
        assert worker.get("/experiment")["latest"]["experiment"]["state"] == "running"
        assert judged() == before
        worker.wait_for(lambda: worker.get("/search", q="tea", user_id="user-1") is not None, 60, "serving again")
        ask_and_judge(worker, broker.bootstrap_servers, "b", 40)
        worker.wait_for(lambda: sum(judged().values()) == 80, 60, "the judgements after the restart")
        arms = {r["arm"] for r in worker.get("/evaluation", by="version,arm")["rows"]}
        assert arms == {"serving", "candidate"}

        status = cli(worker, "experiment", "status")
        assert status.returncode == 0 and "running" in status.stdout and "segment=web" in status.stdout
        table = cli(worker, "evaluation", "--by", "version,arm,slice", "--slices", "segment")
        assert table.returncode == 0 and "segment=app" in table.stdout

        stopped = cli(worker, "experiment", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        worker.wait_for(lambda: worker.get("/experiment")["latest"]["experiment"]["state"] == "stopped", 60,
                        "the experiment stopped")
        worker.wait_for(lambda: worker.get("/search", q="green tea", k=1, user_id="user-1")["arm"] == "serving"
                        and worker.get("/search", q="green tea", k=1, user_id="user-2")["arm"] == "serving", 30,
                        "every user back on serving")
        assert worker.get("/health")["model_version"] == base.version
    finally:
        worker.stop()
