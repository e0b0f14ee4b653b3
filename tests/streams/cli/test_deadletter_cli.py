"""`gristmill deadletter inspect` and `replay` against a real worker: fixed records get indexed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.worker_process import WorkerProcess
from tests.kafka_io import consume_all, produce

pytestmark = pytest.mark.integration
NAMESPACE = "dl-it"


def gristmill(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], env={**worker.env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=120)


def test_inspect_fix_and_replay(tmp_path: Path, registry_dir: Path, broker: EmbeddedBroker) -> None:
    bootstrap = broker.bootstrap_servers
    worker = WorkerProcess(tmp_path / "data", registry_dir, bootstrap, NAMESPACE).start()
    try:
        produce(bootstrap, f"{NAMESPACE}.documents", [
            (b"fixme-1", b'{"doc_id": "fixme-1", "version": "1", "op": "upsert", "text": "Lighthouses guide ships."}'),
            (b"fixme-2", b'{"doc_id": "fixme-2", "version": 1, "op": "upsert", "text": ""}'),
            (b"hopeless", b"\xff\xfe binary"),
            (b"huge", b'{"doc_id": "huge", "version": 1, "op": "upsert", "text": "' + b"y" * 1_500_000 + b'"}'),
        ])
        consume_all(bootstrap, f"{NAMESPACE}.deadletter", 4, timeout_s=60)
        produce(bootstrap, f"{NAMESPACE}.deadletter", [(b"stray", b"not a dead letter")])  # someone else's record
        exported = tmp_path / "dead.jsonl"
        inspected = gristmill(worker, "deadletter", "inspect", "--out", str(exported))
        assert inspected.returncode == 0, inspected.stderr
        assert "4 dead letters" in inspected.stdout and "int_type" in inspected.stdout
        assert "skipped 1 records that are not dead letters" in inspected.stdout and "truncated" in inspected.stdout
        letters = [json.loads(line) for line in exported.read_text().splitlines()]
        by_key = {letter["key"]: letter for letter in letters}
        assert by_key["hopeless"]["value_encoding"] == "base64"
        assert by_key["huge"]["value_truncated"] and by_key["huge"]["value_size"] > 1_500_000

        by_key["fixme-1"]["value"] = by_key["fixme-1"]["value"].replace('"version": "1"', '"version": 1')
        fixed_text = '"text": "Tides follow the moon."'
        by_key["fixme-2"]["value"] = by_key["fixme-2"]["value"].replace('"text": ""', fixed_text)
        exported.write_text("".join(json.dumps(letter) + "\n" for letter in by_key.values()))
        dry = gristmill(worker, "deadletter", "replay", "--dry-run", str(exported))
        assert dry.returncode == 4 and "2 valid, 2 still invalid; replayed 0" in dry.stdout
        assert "truncated" in dry.stdout and "produce the corrected original record" in dry.stdout
        replayed = gristmill(worker, "deadletter", "replay", str(exported))
        assert replayed.returncode == 4 and "replayed 2" in replayed.stdout and "invalid UTF-8" in replayed.stdout
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 2, 60, "replayed documents indexed")
        assert worker.get("/search", q="what moves the tides", k=1)["hits"][0]["doc_id"] == "fixme-2"
    finally:
        worker.stop()
