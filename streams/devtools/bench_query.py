"""`gristmill bench query`: query latency over HTTP and Kafka and sustained QPS, beside a baseline
(sentence-transformers encode + qdrant-client local-mode search per query) measured in the same run; at the smallest
size, the state stores in PostgreSQL beside SQLite (streams.devtools.bench_state)."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
from rich.console import Console

from streams.broker import EmbeddedBroker
from streams.devtools.bench_access import access_rows
from streams.devtools.bench_index import build_index
from streams.devtools.bench_ingest import Row, bench_texts, print_rows
from streams.devtools.bench_state import run_state_backends
from streams.devtools.ingest_rig import NAMESPACE
from streams.devtools.worker_process import WorkerProcess
from streams.ml.ranking import percentile
from streams.ml.serving import collection_name, open_encoder, open_registry
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from streams.state.registry import LocalModelRegistry, ModelVersion, ensure_base_model
from streams.state.store import ChunkPoint
from streams.topics import create_topics


def latencies(call: Callable[[str], object], queries: list[str]) -> list[float]:
    out = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def sustained_qps(url: str, queries: list[str], concurrency: int, seconds: float, mode: str = "hybrid"
                        ) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            params = urllib.parse.urlencode({"q": queries[i % len(queries)], "k": 10, "mode": mode})
            async with session.get(f"{url}/search?{params}") as response:
                await response.read()
                response.raise_for_status()
            done += 1
            i += concurrency
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, c) for c in range(concurrency)))
    return done / (time.perf_counter() - started)


def run_query_bench(settings: Settings, sizes: Sequence[int], console: Console, *, state_backends: bool = True,
                    evaluation_answers: int = 100_000, principals: int = 1_000, access_only: bool = False
                    ) -> list[Row]:
    """At the smallest size also (`state_backends`) the state in SQLite beside PostgreSQL: served latency and
    `GET /evaluation` over `evaluation_answers` logged answers (streams.devtools.bench_state); at the largest,
    filtered and permission-restricted searches over `principals` principals (streams.devtools.bench_access) —
    those alone with `access_only`."""
    model = ensure_base_model(open_registry(settings))
    encoder = open_encoder(settings, model)
    short, long = bench_texts()
    queries = short[:300]
    vocabulary = sorted({w for text in long for w in text.split()})
    bench = settings.model_copy(update={"namespace": NAMESPACE})
    rows: list[Row] = []
    base_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as tmp:
        for n, chunks in enumerate([] if access_only else sorted(sizes)):
            data_dir = Path(tmp) / f"index-{chunks}"
            console.print(f"building a {chunks:,}-chunk index (dense and BM25 vectors)...")
            store = EdgeVectorStore(data_dir / "qdrant", collection_name(bench, model.version), encoder.dim)
            points = build_index(store, encoder, settings, chunks, long[:100], vocabulary)
            store.close()
            if n == 0:
                base_ms = baseline_latencies(model, points, queries, console)
                rows.append(Row(f"baseline, one query at a time, {chunks:,} chunks: p50 / p99 (ms)",
                                f"{pct(base_ms, 50)} / {pct(base_ms, 99)}"))
            http_ms: dict[str, list[float]] = {}
            qps: dict[str, float] = {}
            with EmbeddedBroker() as broker:
                worker = WorkerProcess(data_dir, settings.models_dir, broker.bootstrap_servers, NAMESPACE,
                                       GRISTMILL_QUERY_CACHE_SIZE="0")
                create_topics(bench.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers}))
                try:
                    worker.start()
                    console.print(f"worker up with {worker.get('/health')['index']['chunks']:,} chunks; HTTP...")
                    for mode in ("dense", "hybrid"):
                        def http(q: str, mode: str = mode, worker: WorkerProcess = worker) -> object:
                            return worker.get("/search", q=q, k=10, mode=mode)

                        http(queries[0])
                        http_ms[mode] = latencies(http, queries[:200])
                        console.print(f"sustained QPS over HTTP, {mode} (16 concurrent clients, 8 s)...")
                        qps[mode] = asyncio.run(sustained_qps(worker.url, queries, 16, 8.0, mode))
                    if n == 0:
                        rows += kafka_rows(bench.model_copy(update={"kafka_bootstrap_servers":
                                                                    broker.bootstrap_servers}), queries, base_ms,
                                           console)
                finally:
                    worker.stop()
                if n == 0 and state_backends:
                    rows += run_state_backends(settings, data_dir, settings.models_dir, Path(tmp), NAMESPACE,
                                               model.version, queries, chunks, evaluation_answers, console)
                if n == 0:
                    rows += experiment_rows(settings, model, encoder, data_dir, Path(tmp) / "registry", broker,
                                            queries, long[:100], vocabulary, chunks, console)
            rows += mode_rows(chunks, http_ms, qps, base_ms, check=chunks >= 100_000)
    rows += access_rows(settings, encoder, max(sizes), principals, queries, long[:100], vocabulary, console)
    print_rows("gristmill bench query", rows, console)
    return rows


EXPERIMENTS = (("no experiment", None, 0.0), ("shadow at 0.2", "shadow", 0.2), ("shadow at 1.0", "shadow", 1.0),
               ("split at 0.5", "split", 0.5), ("no experiment, again", None, 0.0))


def experiment_rows(settings: Settings, model: ModelVersion, encoder: OnnxEncoder, data_dir: Path,
                    registry_dir: Path, broker: EmbeddedBroker, queries: list[str], real_docs: list[str],
                    vocabulary: list[str], chunks: int, console: Console) -> list[Row]:
    """Served HTTP latency (one query at a time, cache off, 300 queries a phase) with no experiment (before and
    after the others, pooled), a shadow at 0.2 and 1.0 and a 50% split of a candidate version (the same model
    registered again, its collection as large as serving's), and how many searches each shadow answered."""
    registry = LocalModelRegistry(registry_dir, model.name)
    for version in ("v1", "v2"):
        staging = registry_dir / f".staging-{version}"
        shutil.copytree(model.path, staging, ignore=shutil.ignore_patterns("manifest.json", "model.int8.onnx"))
        registry.register(staging, source=model.source, facts={"dim": model.dim, "max_tokens": model.max_tokens},
                          version=version)
    registry.promote("v1")
    bench = settings.model_copy(update={"namespace": NAMESPACE})
    console.print("building the candidate's collection (v2) as large as serving's...")
    store = EdgeVectorStore(data_dir / "qdrant", collection_name(bench, "v2"), encoder.dim)
    build_index(store, encoder, settings, chunks, real_docs, vocabulary)
    store.close()
    worker = WorkerProcess(data_dir, registry_dir, broker.bootstrap_servers, NAMESPACE,
                           GRISTMILL_QUERY_CACHE_SIZE="0", GRISTMILL_ADMIN_TOKEN="bench",
                           GRISTMILL_EXPERIMENT_MIN_JUDGED=str(10**9),  # measure, never decide
                           GRISTMILL_EXPERIMENT_GUARDRAIL_LATENCY_RATIO="1e6",
                           GRISTMILL_AGENTS="query,rollout,experiment")
    served: dict[str, list[float]] = {}
    shadow: dict[str, dict[str, float]] = {}
    try:
        worker.start()
        for name, mode, fraction in EXPERIMENTS:
            if mode is not None:
                worker.post("/admin/experiment", {"version": "v2", "mode": mode, "fraction": fraction},
                            token="bench")
                worker.wait_for(lambda: (worker.get("/experiment")["latest"] or {}).get("experiment", {}).get(
                    "state") == "running", 120, f"the {name} experiment to run")
            console.print(f"served HTTP latency, {name}...")
            latencies(lambda q: worker.get("/search", q=q, k=10), queries[:50])  # warm-up
            served[name] = latencies(lambda q: worker.get("/search", q=q, k=10), queries[:300])
            if mode == "shadow":
                time.sleep(2.0)  # the queue drains
                shadow[name] = shadow_counts(worker)
            if mode is not None:
                if worker.get("/experiment")["latest"]["experiment"]["state"] == "running":
                    worker.post("/admin/experiment/stop", {}, token="bench")
                worker.wait_for(lambda: worker.get("/experiment")["latest"]["experiment"]["state"] == "stopped",
                                60, "the experiment to stop")
                time.sleep(3.0)  # the challenger is let go and the shadow's queue drains
    finally:
        worker.stop()
    base = served.pop("no experiment") + served.pop("no experiment, again")  # before and after: no drift hides
    served["no experiment"] = base
    rows = []
    for name, _, _ in EXPERIMENTS[:-1]:
        for q in (50, 99):
            ratio = percentile(served[name], q) / percentile(base, q)
            check = name == "shadow at 0.2" and q == 50
            rows.append(Row(f"{chunks:,} chunks: served HTTP p{q}, {name} (ms)", pct(served[name], q),
                            pct(base, q) if name != "no experiment" else "", base_ratio(ratio, name),
                            "p50 within 15%" if check else "", ratio <= 1.15 if check else None))
    before = {"answered": 0.0, "skipped": 0.0}
    for name, counts in shadow.items():  # counters accumulate over the phases
        rows.append(Row(f"{chunks:,} chunks: {name}: shadow searches answered / skipped",
                        f"{counts['answered'] - before['answered']:.0f} / {counts['skipped'] - before['skipped']:.0f}"))
        before = counts
    return rows


def shadow_counts(worker: WorkerProcess) -> dict[str, float]:
    """`gristmill_shadow_searches_total` by outcome, from the worker's /metrics."""
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {"answered": 0.0, "skipped": 0.0}
    for line in text.splitlines():
        if line.startswith("gristmill_shadow_searches_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


def base_ratio(ratio: float, name: str) -> float | None:
    """The ratio column reads 'baseline / measured' (above 1: faster than the baseline)."""
    return None if name == "no experiment" else 1 / ratio


def pct(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.1f}"


def baseline_latencies(model: ModelVersion, points: list[ChunkPoint], queries: list[str], console: Console
                       ) -> list[float]:
    """What a user writes instead: sentence-transformers encode + qdrant-client local-mode search, one query at a
    time (ms each)."""
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm
    from sentence_transformers import SentenceTransformer  # [train] extra: the baseline only

    console.print("baseline: sentence-transformers + qdrant-client local mode, one query at a time...")
    reference = SentenceTransformer(model.source, device="cpu")
    local = QdrantClient(location=":memory:")
    local.create_collection("bench", vectors_config=qm.VectorParams(size=model.dim, distance=qm.Distance.COSINE))
    local.upload_points("bench", [qm.PointStruct(id=p.point_id, vector=p.vector.tolist(),  # type: ignore[union-attr]
                                                 payload={"text": p.text}) for p in points], batch_size=1_000)

    def baseline(query: str) -> object:
        return local.query_points("bench", query=reference.encode([query])[0].tolist(), limit=10, with_payload=True)

    baseline(queries[0])
    return latencies(baseline, queries[:150])


def kafka_rows(settings: Settings, queries: list[str], base: list[float], console: Console) -> list[Row]:
    console.print("Kafka round trips (hybrid)...")
    with QueryRoundTrip(settings) as roundtrip:
        def kafka(query: str) -> object:
            query_id = roundtrip.send(query, 10)
            return roundtrip.wait([query_id], 30)

        kafka(queries[0])
        kafka_ms = latencies(kafka, queries[:150])
    return [Row(f"Kafka round trip p{q} (ms)", pct(kafka_ms, q), pct(base, q), percentile(base, q) /
                percentile(kafka_ms, q), "<= 25 ms" if q == 50 else "", percentile(kafka_ms, q) <= 25.0 if q == 50
                else None) for q in (50, 99)]


def mode_rows(chunks: int, http_ms: dict[str, list[float]], qps: dict[str, float], base: list[float],
              check: bool) -> list[Row]:
    """HTTP latency and QPS per mode at one index size, dense beside hybrid, each against the baseline."""
    rows = []
    base_qps = 1000 / statistics.fmean(base)
    for mode in ("dense", "hybrid"):
        for q, target in ((50, 10.0 if mode == "dense" and not check else None),  # targets of the 10k index
                          (99, 30.0 if mode == "dense" and not check else None)):
            met = None if target is None else percentile(http_ms[mode], q) <= target
            rows.append(Row(f"{chunks:,} chunks: HTTP {mode} p{q} (ms)", pct(http_ms[mode], q), pct(base, q),
                            percentile(base, q) / percentile(http_ms[mode], q), f"<= {target:.0f} ms" if target else "",
                            met))
        rows.append(Row(f"{chunks:,} chunks: sustained QPS {mode} (HTTP, 16 clients)", f"{qps[mode]:,.0f}",
                        f"{base_qps:,.0f}", qps[mode] / base_qps))
    ratio = percentile(http_ms["hybrid"], 50) / percentile(http_ms["dense"], 50)
    rows.append(Row(f"{chunks:,} chunks: hybrid p50 / dense p50", f"{ratio:.2f}x", target="<= 2.0x" if check else "",
                    met=ratio <= 2.0 if check else None))
    return rows
