"""Every metric a Grafana panel queries is exported by a running worker."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.devtools.demo.synthetic import documents, queries
from streams.devtools.worker_process import WorkerProcess
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from tests.kafka_io import consume_all, produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "dash-it"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_info")
DOCUMENTS_LAG = r'gristmill_consumer_lag\{partition="\d+",topic="dash-it.documents"\}'
ONLINE_NDCG = r'gristmill_online_ndcg_at_10\{arm="serving",slice="all",version="v1"\} '
INVALID_DOCUMENT = r'gristmill_records_invalid_total\{reason="[^"]+",topic="documents"\} 1\.0'


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/gristmill.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 14
    return {name for expr in exprs for name in re.findall(r"\bgristmill_[a-z0-9_]+", expr)}


def test_worker_exports_every_metric_the_dashboard_queries(tmp_path: Path, registry_dir: Path,
                                                            broker: EmbeddedBroker) -> None:
    worker = WorkerProcess(tmp_path / "data", registry_dir, broker.bootstrap_servers, NAMESPACE,
                           GRISTMILL_MONITOR_WINDOW_RECORDS="20").start()
    try:
        bootstrap = broker.bootstrap_servers
        docs = documents(20, seed=1, short_share=0.5)  # fails a suite: GX failure metrics appear
        produce(bootstrap, f"{NAMESPACE}.documents",
                [(d.doc_id.encode(), d.model_dump_json(exclude_none=True).encode()) for d in docs] + [(b"x", b"{")])
        worker.wait_for(lambda: worker.get("/health")["index"]["documents"] == 20, 60, "documents indexed")
        consume_all(bootstrap, f"{NAMESPACE}.quality", 1, timeout_s=60)
        worker.get("/search", q="kafka index", k=3)
        worker.get("/search", q="kafka index", k=3)
        settings = Settings(kafka_bootstrap_servers=bootstrap, namespace=NAMESPACE)
        with QueryRoundTrip(settings) as roundtrip:
            sent = [roundtrip.send(q.text, 3) for q in queries(5, seed=1)]
            answers = roundtrip.wait(sent, 60)
        judged = [(sent[0].encode(), json.dumps({"query_id": sent[0], "label": 1,
                                                  "doc_id": answers[sent[0]].response["hits"][0]["doc_id"]}).encode())]
        produce(bootstrap, f"{NAMESPACE}.feedback", judged)  # online quality gauges need a judged answer
        # the bad record may sit on another partition than the last good ones, and the lag gauge is refreshed
        # every 2 s: poll for both, with a bound, before reading the exposition
        worker.wait_for(lambda: re.search(INVALID_DOCUMENT, metrics_text(worker))
                        and re.search(DOCUMENTS_LAG, metrics_text(worker)), 30, "the invalid record and lag exported")
        # the online evaluation gauges are published every 15 s
        worker.wait_for(lambda: re.search(ONLINE_NDCG, metrics_text(worker)), 45, "online quality gauges exported")
        exposition = metrics_text(worker)
    finally:
        worker.stop()
    exported = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line.startswith("gristmill_")}
    missing = sorted(name for name in dashboard_metric_names()
                     if name not in exported and not any(name + suffix in exported for suffix in SUFFIXES))
    assert not missing, f"dashboard queries metrics the worker does not export: {missing}"
    assert re.search(DOCUMENTS_LAG, exposition) and re.search(INVALID_DOCUMENT, exposition)


def metrics_text(worker: WorkerProcess) -> str:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as page:
        return page.read().decode()
