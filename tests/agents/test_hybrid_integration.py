"""Hybrid retrieval through a real worker: an index made before sparse vectors keeps serving (dense) without errors,
`gristmill reindex` rolls it out into a collection with both vectors, and then dense, sparse and hybrid searches,
chunk- or document-level, answer over HTTP and Kafka, each saying which mode answered; filters apply to every mode;
part codes that only lexical retrieval can match are found by sparse and hybrid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.demo.catalog import products
from streams.devtools.worker_process import WorkerProcess
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from tests.kafka_io import produce

pytestmark = pytest.mark.integration
NAMESPACE = "hybrid-it"
CATALOG = products(30)


def post(worker: WorkerProcess, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{worker.url}/search", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)  # type: ignore[no-any-return]


def test_an_old_index_keeps_serving_then_reindex_brings_hybrid(tmp_path: Path, registry_dir: Path,
                                                                broker: EmbeddedBroker) -> None:
    bootstrap = broker.bootstrap_servers
    models = tmp_path / "models"
    shutil.copytree(registry_dir / "minilm" / "v1", models / "minilm" / "v1")
    (models / "minilm" / "CURRENT").write_text("v1\n")
    documents = [(p.doc_id.encode(), json.dumps({"doc_id": p.doc_id, "version": 1, "op": "upsert", "source": (
        "even" if i % 2 == 0 else "odd"), "text": f"Part {p.code}. {p.text}"}).encode()) for i, p in enumerate(CATALOG)]
    code = CATALOG[7]

    # an index as gristmill made it before chunks carried sparse vectors
    older = WorkerProcess(tmp_path / "data", models, bootstrap, NAMESPACE, GRISTMILL_SPARSE_VECTORS="false").start()
    try:
        produce(bootstrap, f"{NAMESPACE}.documents", documents)
        older.wait_for(lambda: older.get("/health")["index"]["documents"] == len(CATALOG), 60, "catalogue indexed")
    finally:
        older.stop()

    worker = WorkerProcess(tmp_path / "data", models, bootstrap, NAMESPACE, GRISTMILL_ROLLOUT_STEP_DOCUMENTS="8",
                           GRISTMILL_ROLLOUT_RETIRE_AFTER_S="1").start()
    try:
        kept = worker.get("/search", q=f"{code.code} datasheet", k=3)  # hybrid asked, dense answers: no error
        assert kept["mode"] == "dense" and len(kept["hits"]) == 3 and kept["index_version"] == "v1"

        reindexed = subprocess.run([sys.executable, "-m", "streams", "reindex"], env=worker.env, capture_output=True,
                                   text=True, timeout=60)
        assert reindexed.returncode == 0 and "v1 -> v2" in reindexed.stdout, reindexed.stdout + reindexed.stderr
        worker.wait_for(lambda: worker.get("/health")["index_version"] == "v2", 180, "the reindex rolled out")
        assert worker.get("/health")["index"]["documents"] == len(CATALOG)

        for mode in ("sparse", "hybrid"):
            found = worker.get("/search", q=f"{code.code} datasheet", k=3, mode=mode)
            assert found["mode"] == mode and found["hits"][0]["doc_id"] == code.doc_id, (mode, found)
        assert worker.get("/search", q="datasheet", k=3)["mode"] == "hybrid"  # the default

        by_doc = post(worker, {"q": "a lamp made of bamboo", "k": 5, "group": "doc", "mode": "hybrid"})
        assert by_doc["group"] == "doc" and len({h["doc_id"] for h in by_doc["hits"]}) == len(by_doc["hits"]) == 5
        for mode in ("dense", "sparse", "hybrid"):  # filters hold in every mode
            filtered = post(worker, {"q": f"{code.code} part", "k": 10, "mode": mode, "filter": {"source": "odd"}})
            assert filtered["hits"] and all(h["source"] == "odd" for h in filtered["hits"]), mode
        bad = urllib.request.Request(f"{worker.url}/search?q=x&mode=fuzzy")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 400

        settings = Settings(kafka_bootstrap_servers=bootstrap, namespace=NAMESPACE)
        with QueryRoundTrip(settings) as roundtrip:
            sent = {roundtrip.send(f"{code.code}", 3, mode=mode, group=group): (mode, group)
                    for mode in ("dense", "sparse", "hybrid") for group in ("chunk", "doc")}
            answers = roundtrip.wait(sent, 60)
        for query_id, (mode, group) in sent.items():
            response = answers[query_id].response
            assert (response["mode"], response["group"]) == (mode, group)
            assert response["model_version"] == response["index_version"] == "v2"
        assert all(answers[q].response["hits"][0]["doc_id"] == code.doc_id
                   for q, (mode, _) in sent.items() if mode != "dense")
    finally:
        worker.stop()
