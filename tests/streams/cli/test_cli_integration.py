"""`gristmill up` on its own embedded broker, driven through the CLI a user would type."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools.worker_process import WorkerProcess

pytestmark = pytest.mark.integration
SECRET = "do-not-log-3f9a1c"


def gristmill(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], env={**worker.env, "COLUMNS": "200"},
                          cwd=worker.data_dir, capture_output=True, text=True, timeout=120)


def tansu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "tansu.* broker"], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


@pytest.fixture
def stack(tmp_path: Path, registry_dir: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tmp_path / "data", registry_dir, bootstrap=None, namespace="cli",
                           GRISTMILL_ADMIN_TOKEN=SECRET, GRISTMILL_KAFKA_SASL_PASSWORD=SECRET)
    yield worker
    worker.stop()


def test_up_status_produce_search_and_clean_stop(stack: WorkerProcess, tmp_path: Path) -> None:
    brokers_before = tansu_pids()
    stack.start()
    run_file = (stack.data_dir / "run.json").read_text()
    assert SECRET not in run_file
    info = json.loads(run_file)
    assert info["embedded_broker"] and info["kafka"].startswith("127.0.0.1:")
    assert info["http"] == stack.url and "ingest" in info["agents"]
    assert info["kafka"] in stack.log() and stack.url in stack.log()
    own_broker = tansu_pids() - brokers_before
    assert len(own_broker) == 1

    status = gristmill(stack, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert info["kafka"] in status.stdout and stack.url in status.stdout

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "kafka.md").write_text("# Kafka partitions\nA topic is split into partitions for parallelism.\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "tea.txt").write_text("Green tea is steeped at about 80 degrees Celsius.\n")
    beir = tmp_path / "corpus.jsonl"
    beir.write_text(json.dumps({"_id": "b1", "title": "Volcanoes", "text": "Lava flows from an eruption."}) + "\n")
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([
        json.dumps({"doc_id": "e1", "version": 1, "op": "upsert", "text": "The bicycle has two wheels."}),
        "not json at all",
    ]) + "\n")
    for path in (folder, beir, events):
        produced = gristmill(stack, "produce", "documents", str(path))
        assert produced.returncode == 0, produced.stdout + produced.stderr
        assert "produced" in produced.stdout
    stack.wait_for(lambda: stack.get("/health")["index"]["documents"] == 4, 60, "4 documents indexed")
    assert "Green tea is steeped" in stack.get("/documents/sub/tea.txt")["chunks"][0]["text"]

    found = gristmill(stack, "search", "how hot should the water be for tea", "-k", "2")
    assert found.returncode == 0, found.stderr
    assert "sub/tea.txt" in found.stdout
    assert stack.get("/search", q="molten rock", k=1)["hits"][0]["doc_id"] == "b1"
    missing = gristmill(stack, "produce", "documents", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "neither" in missing.stdout

    assert stack.stop(signal.SIGINT) == 0
    assert "gristmill stopped" in stack.log()
    assert SECRET not in stack.log() and SECRET not in status.stdout
    assert not (stack.data_dir / "run.json").exists()
    assert not (tansu_pids() & own_broker), "the embedded broker outlived gristmill"
    assert gristmill(stack, "status").returncode == 1


def test_sigterm_stops_worker_and_broker(stack: WorkerProcess) -> None:
    before = tansu_pids()
    stack.start()
    own_broker = tansu_pids() - before
    assert stack.stop(signal.SIGTERM) == 0
    assert not (tansu_pids() & own_broker)


def test_http_rejects_bad_requests(stack: WorkerProcess) -> None:
    import urllib.error
    import urllib.request

    stack.start()
    for query in ("/search?q=", "/search?q=x&k=0", "/search?q=x&k=abc"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(stack.url + query, timeout=10)
        assert caught.value.code == 400 and "error" in json.loads(caught.value.read())
    request = urllib.request.Request(stack.url + "/search", data=b'{"q": "x", "filter": {"text": "y"}}',
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400 and "cannot filter" in json.loads(caught.value.read())["error"]
    assert stack.get("/documents/never-seen") is None
    assert os.path.exists(stack.data_dir / "run.json")


def test_bad_inputs_end_in_one_clear_line_and_lose_no_good_record(stack: WorkerProcess, tmp_path: Path) -> None:
    stack.start()
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(40):
        (notes / f"note-{i}.txt").write_text(f"Note {i} about the harbour lantern.\n")
    (notes / "huge.txt").write_text("lorem ipsum " * 160_000)  # 1.9 MB
    (notes / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (notes / "passwd.txt").symlink_to(secret)
    produced = gristmill(stack, "produce", "documents", str(notes))
    assert produced.returncode == 4 and "Traceback" not in produced.stderr + produced.stdout
    assert "produced 40 records" in produced.stdout and "3 could not be sent" in produced.stdout
    assert "huge.txt" in produced.stdout and "latin1.txt" in produced.stdout and "--follow-symlinks" in produced.stdout
    stack.wait_for(lambda: stack.get("/health")["index"]["documents"] == 40, 120, "the 40 notes indexed")
    assert stack.get("/documents/passwd.txt") is None

    binary = tmp_path / "events.bin"
    binary.write_bytes(b"\xff\xfe\x00 not a text file")
    replayed = gristmill(stack, "deadletter", "replay", str(binary))
    assert replayed.returncode == 1 and "not UTF-8" in replayed.stdout and "Traceback" not in replayed.stderr
    missing = gristmill(stack, "deadletter", "replay", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "cannot read" in missing.stdout and "Traceback" not in missing.stderr
    unknown = gristmill(stack, "promote", "v9")
    assert unknown.returncode == 1 and "v9" in unknown.stdout and "Traceback" not in unknown.stderr
