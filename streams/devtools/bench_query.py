"""`gristmill bench query`: query latency over HTTP and Kafka and sustained QPS, beside a baseline
(sentence-transformers encode + qdrant-client local-mode search per query) measured in the same run."""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
from rich.console import Console

from schemas import DocumentEvent
from streams.broker import EmbeddedBroker
from streams.devtools.bench_ingest import NAMESPACE, Row, bench_texts, print_rows
from streams.devtools.worker_process import WorkerProcess
from streams.ml.chunking import Chunker
from streams.ml.indexer import DocumentIndexer
from streams.ml.ranking import percentile
from streams.ml.serving import open_registry
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from streams.state.registry import ensure_base_model
from streams.state.store import ChunkPoint
from streams.topics import create_topics


def build_index(store: EdgeVectorStore, encoder: OnnxEncoder, settings: Settings, chunks: int,
                real_docs: list[str]) -> list[ChunkPoint]:  # with vectors
    """Real embedded documents plus unit-vector filler up to `chunks` points (search cost depends on count)."""
    chunker = Chunker(encoder.tokenizer, settings.chunk_tokens, settings.chunk_overlap, encoder.max_tokens)
    DocumentIndexer(store, encoder, chunker).apply(
        [DocumentEvent(doc_id=f"real-{i}", version=1, op="upsert", text=t) for i, t in enumerate(real_docs)])
    rng = np.random.default_rng(5)
    filler_count = max(0, chunks - store.count_chunks())
    vectors = rng.normal(size=(filler_count, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    filler = [ChunkPoint(f"filler-{i // 4}", i % 4, f"filler chunk {i}", 1, "filler", encoder.version, vectors[i])
              for i in range(filler_count)]
    for start in range(0, len(filler), 1_000):
        store.upsert_chunks(filler[start:start + 1_000])
    return store.all_chunks(with_vectors=True)


def latencies(call: Callable[[str], object], queries: list[str]) -> list[float]:
    out = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def sustained_qps(url: str, queries: list[str], concurrency: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            params = urllib.parse.urlencode({"q": queries[i % len(queries)], "k": 10})
            async with session.get(f"{url}/search?{params}") as response:
                await response.read()
                response.raise_for_status()
            done += 1
            i += concurrency
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, c) for c in range(concurrency)))
    return done / (time.perf_counter() - started)


def run_query_bench(settings: Settings, chunks: int, console: Console) -> list[Row]:
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm
    from sentence_transformers import SentenceTransformer  # [train] extra: the baseline only

    model = ensure_base_model(open_registry(settings))
    encoder = OnnxEncoder(model, threads=settings.onnx_threads, batch_size=settings.encode_batch_size)
    short, long = bench_texts()
    queries = short[:300]
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as tmp:
        data_dir = Path(tmp)
        console.print(f"building a {chunks:,}-chunk index...")
        store = EdgeVectorStore(data_dir / "qdrant", f"{NAMESPACE}-{settings.collection}", encoder.dim)
        points = build_index(store, encoder, settings, chunks, long[:100])
        store.close()
        del encoder, store  # no idle ONNX Runtime threads beside the baseline
        gc.collect()

        console.print("baseline: sentence-transformers + qdrant-client local mode, one query at a time...")
        reference = SentenceTransformer(model.source, device="cpu")
        local = QdrantClient(location=":memory:")
        local.create_collection("bench", vectors_config=qm.VectorParams(size=model.dim, distance=qm.Distance.COSINE))
        local.upload_points("bench", [qm.PointStruct(id=p.point_id, vector=p.vector.tolist(),  # type: ignore[union-attr]
                                                     payload={"text": p.text}) for p in points], batch_size=1_000)

        def baseline(query: str) -> object:
            return local.query_points("bench", query=reference.encode([query])[0].tolist(), limit=10,
                                      with_payload=True)

        baseline(queries[0])
        base_ms = latencies(baseline, queries[:150])
        base_qps = 1000 / statistics.fmean(base_ms)

        with EmbeddedBroker() as broker:
            worker = WorkerProcess(data_dir, settings.models_dir, broker.bootstrap_servers, NAMESPACE,
                                   GRISTMILL_QUERY_CACHE_SIZE="0")
            create_topics(settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers,
                                                      "namespace": NAMESPACE}))
            try:
                worker.start()
                console.print(f"worker up with {worker.get('/health')['index']['chunks']:,} chunks; HTTP...")
                http = lambda q: worker.get("/search", q=q, k=10)  # noqa: E731
                http(queries[0])
                http_ms = latencies(http, queries[:200])
                console.print("Kafka round trips...")
                with QueryRoundTrip(settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers,
                                                                "namespace": NAMESPACE})) as roundtrip:
                    def kafka(query: str) -> object:
                        query_id = roundtrip.send(query, 10)
                        return roundtrip.wait([query_id], 30)

                    kafka(queries[0])
                    kafka_ms = latencies(kafka, queries[:150])
                console.print("sustained QPS over HTTP (16 concurrent clients, 10 s)...")
                qps = asyncio.run(sustained_qps(worker.url, queries, 16, 10.0))
            finally:
                worker.stop()

    def pct(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.1f}"

    rows = [Row("index size (chunks)", f"{len(points):,}", f"{len(points):,}")]
    for q, target in ((50, 10.0), (95, None), (99, 30.0)):
        met = None if target is None else percentile(http_ms, q) <= target
        rows.append(Row(f"HTTP latency p{q} (ms)", pct(http_ms, q), pct(base_ms, q),
                        percentile(base_ms, q) / percentile(http_ms, q), f"<= {target:.0f} ms" if target else "", met))
    for q, target in ((50, 25.0), (95, None), (99, None)):
        met = None if target is None else percentile(kafka_ms, q) <= target
        rows.append(Row(f"Kafka round trip p{q} (ms)", pct(kafka_ms, q), pct(base_ms, q),
                        percentile(base_ms, q) / percentile(kafka_ms, q), f"<= {target:.0f} ms" if target else "", met))
    rows.append(Row("sustained QPS (HTTP, 16 clients)", f"{qps:,.0f}", f"{base_qps:,.0f}", qps / base_qps,
                    ">= 3.0x", qps / base_qps >= 3.0))
    print_rows("gristmill bench query", rows, console)
    return rows
