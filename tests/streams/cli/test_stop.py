"""`gristmill up` stops in seconds: SIGTERM or SIGINT, to the process or to its whole process group (what systemd
or a supervisor sends), in the middle of a burst of long documents. The batch being encoded stops early and
unwritten, records in flight wait at most `GRISTMILL_STOP_WAIT_S`, no ERROR is logged, and after a restart every
document is indexed (what was not committed is re-delivered)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
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
