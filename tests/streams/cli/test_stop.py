"""`gristmill up` stops in seconds: SIGTERM or SIGINT, to the process or to its whole process group (what systemd
or a supervisor sends), in the middle of a burst of long documents. The batch being encoded stops early and
unwritten, records in flight wait at most `GRISTMILL_STOP_WAIT_S`, no ERROR is logged, and after a restart every
document is indexed (what was not committed is re-delivered)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.demo.catalog import code_queries, products
from streams.devtools.worker_process import WorkerProcess
from streams.state.training_pairs import TrainingPairs
from tests.kafka_io import produce

pytestmark = pytest.mark.integration

WORDS = " ".join(f"term{i} of the long maintenance manual" for i in range(40))


@pytest.mark.parametrize(("sig", "target"), [(signal.SIGTERM, "group"), (signal.SIGINT, "process")])
def test_a_stop_in_a_burst_takes_seconds_and_loses_nothing(tmp_path: Path, registry_dir: Path,
                                                           broker: EmbeddedBroker, sig: int, target: str) -> None:
    namespace = f"stop-{sig}-{target}"
    worker = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, namespace)
    worker.data_dir.mkdir(parents=True)
    with (worker.data_dir / "worker.log").open("w") as log:  # its own process group, as under a supervisor
        process = subprocess.Popen([sys.executable, "-m", "streams", "up"], env=worker.env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=worker.data_dir, start_new_session=True)
    worker.process = process
    worker.wait_for(lambda: worker.get("/health"), 90, "worker HTTP API")
    docs = 300
    produce(broker.bootstrap_servers, f"{namespace}.documents", [(f"d{i}".encode(), json.dumps(
        {"doc_id": f"d{i}", "version": 1, "op": "upsert", "text": f"document {i}: {WORDS}"}).encode())
        for i in range(docs)])
    worker.wait_for(lambda: worker.get("/health")["index"]["documents"] > 0, 60, "the burst being indexed")
    started = time.monotonic()
    if target == "group":
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    try:
        code = process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    took = time.monotonic() - started
    print(f"{signal.Signals(sig).name} to the {target}: exited with {code} in {took:.1f}s")
    output = worker.log()
    assert took < 30, f"stopping took {took:.1f}s\n{output[-3000:]}"  # about 4-7 s on a 2-core machine
    assert code == 0 and "ERROR" not in output, output[-3000:]
    worker.process = None

    restarted = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, namespace).start()
    try:
        restarted.wait_for(lambda: restarted.get("/health")["index"]["documents"] == docs, 240,
                           "every document indexed after the restart")
    finally:
        restarted.stop()


def test_the_embedded_broker_outlives_the_worker_and_stops_with_it(tmp_path: Path, registry_dir: Path) -> None:
    worker = WorkerProcess(tmp_path / "data", registry_dir, None)
    worker.data_dir.mkdir(parents=True)
    with (worker.data_dir / "worker.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams", "up"], env=worker.env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=worker.data_dir, start_new_session=True)
    worker.process = process
    worker.wait_for(lambda: worker.get("/health"), 90, "worker HTTP API")
    run = json.loads((worker.data_dir / "run.json").read_text())
    broker_pids = subprocess.run(["pgrep", "-f", f"listener-url tcp://{run['kafka']}"], capture_output=True,
                                 text=True).stdout.split()
    assert broker_pids, "the embedded broker runs"
    os.killpg(process.pid, signal.SIGTERM)  # the broker is in a session of its own: the worker stops it last
    assert process.wait(60) == 0
    output = worker.log()
    assert "ERROR" not in output, output[-3000:]
    worker.process = None
    assert all(not Path(f"/proc/{pid}").exists() for pid in broker_pids), "the broker was stopped with the worker"


def test_a_stop_during_a_retrain_takes_seconds_and_the_retrain_is_not_lost(tmp_path: Path, registry_dir: Path,
                                                                          broker: EmbeddedBroker) -> None:
    """SIGTERM to the worker's process group while its trainer fine-tunes: the training child dies with the group,
    the trainer takes that for the stop (no second attempt), and the restarted worker trains again (the `retrain`
    record was not committed)."""
    namespace = "stop-retrain"
    models = tmp_path / "models"
    shutil.copytree(registry_dir / "minilm" / "v1", models / "minilm" / "v1")
    (models / "minilm" / "CURRENT").write_text("v1\n")
    env = {"GRISTMILL_TRAINER_MIN_POSITIVE_PAIRS": "5", "GRISTMILL_RETRAIN_EVERY_POSITIVE_PAIRS": "100000",
           "GRISTMILL_TRAINER_EPOCHS": "50"}  # long enough to be stopped in the middle
    worker = WorkerProcess(tmp_path / "data", models, broker.bootstrap_servers, namespace, **env)
    worker.data_dir.mkdir(parents=True)
    with (worker.data_dir / "worker.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams", "up"], env=worker.env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=worker.data_dir, start_new_session=True)
    worker.process = process
    worker.wait_for(lambda: worker.get("/health"), 90, "worker HTTP API")
    catalog = products(12)
    produce(broker.bootstrap_servers, f"{namespace}.documents", [(p.doc_id.encode(), json.dumps(
        {"doc_id": p.doc_id, "version": 1, "op": "upsert", "text": p.text}).encode()) for p in catalog])
    worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == len(catalog), 60, "catalogue indexed")
    judged = []
    for q in code_queries(catalog):
        answer = worker.get("/search", q=q.text, k=3)
        judged.append((answer["query_id"].encode(), json.dumps(
            {"query_id": answer["query_id"], "doc_id": q.doc_id, "label": 1}).encode()))
    produce(broker.bootstrap_servers, f"{namespace}.feedback", judged)
    pairs = TrainingPairs(worker.data_dir / "feedback.sqlite3")
    try:
        worker.wait_for(lambda: pairs.count("positive") >= 10, 60, "judgements turned into pairs")
    finally:
        pairs.close()
    done = subprocess.run([sys.executable, "-m", "streams", "retrain"], env=worker.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    child = worker.wait_for(lambda: (worker.get("/health")["trainer"] or {}).get("pid"), 120, "a training child")
    worker.wait_for(lambda: ((worker.get("/health")["trainer"] or {}).get("progress") or {}).get("phase")
                    == "fine-tune", 120, "fine-tuning under way")
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    took = time.monotonic() - started
    print(f"SIGTERM to the group during a retrain: exited with {code} in {took:.1f}s")
    output = worker.log()
    assert took < 30, f"stopping took {took:.1f}s\n{output[-3000:]}"  # about 2-4 s on a 2-core machine
    assert code == 0 and "ERROR" not in output, output[-3000:]
    assert "training attempt 1/" not in output  # the killed child was the stop, not a failure to retry
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    worker.process = None

    restarted = WorkerProcess(tmp_path / "data", models, broker.bootstrap_servers, namespace, **env).start()
    try:  # the retrain was not committed: it is delivered again and trains again
        restarted.wait_for(lambda: (restarted.get("/health")["trainer"] or {}).get("pid"), 120,
                           "the retrain trained again after the restart")
    finally:
        restarted.stop()
