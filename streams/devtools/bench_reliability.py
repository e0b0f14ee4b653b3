"""Reliability benchmarks against a real worker and the embedded broker.

`gristmill bench badinput`: N document records with a share of bad ones (30 kinds) vs a clean run of the same
size, side by side: every bad record must reach `deadletter`, every good one the index, and throughput should
stay within 25% of the clean run.

`gristmill bench soak`: ingest at half the measured maximum rate with concurrent HTTP searches for a while;
worker RSS after warm-up, consumer lag, and error logs.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.broker import EmbeddedBroker
from streams.devtools.bench_ingest import bench_texts
from streams.devtools.demo.bad_records import BadRecord, bad_documents, poison_documents
from streams.devtools.worker_process import WorkerProcess
from streams.ml.serving import open_registry
from streams.settings import Settings
from streams.state.registry import ensure_base_model

NAMESPACE = "bench-reliability"
SOAK_POOL = 2_000  # documents the soak keeps updating
HUGE_COPIES = 5  # copies of each poison record of a megabyte or more in a bad-input run
TOPIC = f"{NAMESPACE}.documents"


def _metric_sum(worker: WorkerProcess, name: str, label: str | None = None) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
    return sum(float(value) for labels, value in pattern.findall(text) if label is None or label in labels)


def _document(doc_id: str, text: str, version: int = 1) -> bytes:
    return json.dumps({"doc_id": doc_id, "version": version, "op": "upsert", "text": text}).encode()


@dataclass
class VolumeRun:
    records: int
    good: int
    bad: int
    seconds: float
    dead_letters: int
    indexed: int

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds


def volume_run(registry_dir: Path, records: int, bad_share: float, console: Console, seed: int = 3) -> VolumeRun:
    """Produce `records` document records (a `bad_share` of them bad, cycling through the 30 invalid kinds and the
    poison kinds) as fast as possible and wait until every good one is indexed and every bad one dead-lettered. The
    poison kinds of a megabyte or more (whose dead letters must be truncated) come `HUGE_COPIES` times each, so the
    in-memory broker holds the run."""
    rng = random.Random(seed)
    short, _ = bench_texts(seed)
    bad_at = sorted(rng.sample(range(records), int(records * bad_share)))
    huge = [p for p in poison_documents("poison") if len(p.value or b"") + len(p.key or b"") > 500_000]
    small = bad_documents("x") + [p for p in poison_documents("poison") if p not in huge]
    bad_of: dict[int, BadRecord] = {}
    for n, i in enumerate(bad_at):  # every 50th bad record is a huge one, until each came HUGE_COPIES times
        use_huge = n % 50 == 0 and n // 50 < HUGE_COPIES * len(huge)
        bad_of[i] = huge[(n // 50) % len(huge)] if use_huge else small[n % len(small)]
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i in range(records):
        if i in bad_of:
            messages.append((bad_of[i].key, bad_of[i].value))
        else:
            messages.append((f"doc-{i}".encode(), _document(f"doc-{i}", f"{short[i % len(short)]} (record {i})")))
    good = records - len(bad_at)
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as tmp, EmbeddedBroker() as broker:
        worker = WorkerProcess(Path(tmp), registry_dir, broker.bootstrap_servers, NAMESPACE).start()
        try:
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, "acks": "all",
                                 "message.max.bytes": 4_000_000,
                                 "queue.buffering.max.messages": 1_000_000})
            started = time.perf_counter()
            for key, value in messages:
                producer.produce(TOPIC, key=key, value=value)
                producer.poll(0)
            producer.flush(120)
            console.print(f"  produced {records:,} records ({len(bad_at):,} bad); waiting for the worker...")
            worker.wait_for(lambda: worker.get("/health")["index"]["documents"] >= good
                            and _metric_sum(worker, "gristmill_deadletters_total") >= len(bad_at),
                            7200, "every record indexed or dead-lettered")
            seconds = time.perf_counter() - started
            dead = int(_metric_sum(worker, "gristmill_deadletters_total"))
            indexed = worker.get("/health")["index"]["documents"]
        finally:
            worker.stop()
    return VolumeRun(records, good, len(bad_at), seconds, dead, indexed)


def run_badinput_bench(settings: Settings, records: int, bad_share: float, console: Console) -> None:
    ensure_base_model(open_registry(settings))
    registry_dir = settings.models_dir
    console.print(f"clean run: {records:,} valid records...")
    clean = volume_run(registry_dir, records, 0.0, console)
    console.print(f"dirty run: {records:,} records, {bad_share:.0%} bad...")
    dirty = volume_run(registry_dir, records, bad_share, console)
    ratio = dirty.records_per_s / clean.records_per_s
    table = Table(title=f"gristmill bench badinput ({records:,} records per run)")
    for column in ("measure", "with bad records", "clean run", "ratio", "target", ""):
        table.add_column(column, justify="left" if column == "measure" else "right")
    mark = Text("met", "green") if ratio >= 0.75 else Text("missed", "red")
    table.add_row("records/s (produce -> indexed or dead-lettered)", f"{dirty.records_per_s:,.0f}",
                  f"{clean.records_per_s:,.0f}", f"{ratio:.2f}x", ">= 0.75x", mark)
    table.add_row("wall time (s)", f"{dirty.seconds:.1f}", f"{clean.seconds:.1f}", "", "", "")
    table.add_row("good records indexed", f"{dirty.indexed:,} / {dirty.good:,}", f"{clean.indexed:,} / {clean.good:,}",
                  "", "all", Text("met", "green") if dirty.indexed == dirty.good and clean.indexed == clean.good
                  else Text("missed", "red"))
    table.add_row("bad records dead-lettered", f"{dirty.dead_letters:,} / {dirty.bad:,}", f"{clean.dead_letters:,} / 0",
                  "", "all", Text("met", "green") if dirty.dead_letters == dirty.bad and not clean.dead_letters
                  else Text("missed", "red"))
    console.print(table)


def _memory_bytes(pid: int) -> tuple[int, int, int]:
    """(RSS, its anonymous part: heaps; its file-backed part: mapped files such as the store's segments and WAL)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields.get(name, "0 kB").split()[0]) * 1024  # type: ignore[return-value]
                 for name in ("VmRSS", "RssAnon", "RssFile"))


def run_soak_bench(settings: Settings, minutes: float, console: Console) -> None:
    ensure_base_model(open_registry(settings))
    registry_dir = settings.models_dir
    short, long = bench_texts(5)
    texts = short + long[:200]
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as tmp, EmbeddedBroker() as broker:
        worker = WorkerProcess(Path(tmp), registry_dir, broker.bootstrap_servers, NAMESPACE,  # texts come again:
                               GRISTMILL_EMBEDDING_CACHE_BYTES="0").start()  # the encoder's cost, every time
        assert worker.process is not None
        pid = worker.process.pid
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, "acks": "all"})
        try:
            console.print(f"measuring the maximum ingest rate (creating the {SOAK_POOL:,} documents of the pool)...")
            started = time.perf_counter()
            for n in range(SOAK_POOL):
                doc_id = f"soak-{n}"
                producer.produce(TOPIC, key=doc_id.encode(), value=_document(doc_id, texts[n % len(texts)]))
                producer.poll(0)
            producer.flush(60)
            worker.wait_for(lambda: worker.get("/health")["index"]["documents"] >= SOAK_POOL, 1800, "max-rate burst")
            max_rate = SOAK_POOL / (time.perf_counter() - started)
            rate = max_rate / 2
            console.print(f"max {max_rate:.0f} docs/s; soaking {minutes:g} min at {rate:.0f} docs/s with searches...")
            stop = threading.Event()
            searches: list[float] = []

            def search() -> None:
                rng = random.Random(1)
                while not stop.is_set():
                    query = urllib.parse.urlencode({"q": rng.choice(short), "k": 5})
                    begun = time.perf_counter()
                    with urllib.request.urlopen(f"{worker.url}/search?{query}", timeout=30) as response:
                        response.read()
                    searches.append(time.perf_counter() - begun)
                    time.sleep(0.05)

            searchers = [threading.Thread(target=search, daemon=True) for _ in range(2)]
            for thread in searchers:
                thread.start()
            samples: list[tuple[float, tuple[int, int, int], float, int]] = []  # (s, memory, lag, chunks)
            begin = time.time()
            duration = minutes * 60
            rng = random.Random(7)
            i = 0
            next_sample = begin
            while (now := time.time()) < begin + duration:
                target = int((now - begin) * rate)
                while i < target:  # a fixed pool of documents, updated and sometimes deleted: the index stays
                    doc_id = f"soak-{rng.randrange(SOAK_POOL)}"  # the same size, so RSS growth means a leak
                    value = (json.dumps({"doc_id": doc_id, "version": i + 2, "op": "delete"}).encode()
                             if rng.random() < 0.02 else _document(doc_id, texts[i % len(texts)], i + 2))
                    producer.produce(TOPIC, key=doc_id.encode(), value=value)
                    producer.poll(0)
                    i += 1
                if now >= next_sample:
                    samples.append((now - begin, _memory_bytes(pid), _metric_sum(worker, "gristmill_consumer_lag"),
                                    worker.get("/health")["index"]["chunks"]))
                    next_sample += 5
                time.sleep(0.01)
            producer.flush(60)
            stop.set()
            for thread in searchers:
                thread.join(30)
            drained = time.time()
            worker.wait_for(lambda: _metric_sum(worker, "gristmill_consumer_lag") == 0, 600, "lag drained")
            drain_s = time.time() - drained
            compactions = _metric_sum(worker, "gristmill_store_compact_seconds_count")
            log = worker.log()
        finally:
            worker.stop()
    warm = [s for s in samples if s[0] >= duration * 0.2]
    baseline, anon_base, file_base = (statistics.median(s[1][k] for s in warm[:6]) for k in range(3))
    final, anon_final, file_final = (statistics.median(s[1][k] for s in warm[-6:]) for k in range(3))
    growth = final / baseline - 1
    max_lag = max(s[2] for s in warm)
    chunks = warm[0][3], warm[-1][3]
    errors = [line for line in log.splitlines() if re.search(r"\b(ERROR|CRITICAL)\b|Traceback", line)]
    table = Table(title=f"gristmill bench soak ({minutes:g} min at half the max rate, with HTTP searches)")
    for column in ("measure", "value", "target", ""):
        table.add_column(column, justify="left" if column == "measure" else "right")
    ok = lambda met: Text("met", "green") if met else Text("missed", "red")  # noqa: E731
    table.add_row("ingest rate (max / soak)", f"{max_rate:.0f} / {rate:.0f} docs/s", "", "")
    table.add_row(f"document events produced (updates/deletes of {SOAK_POOL:,} documents)", f"{i:,}", "", "")
    table.add_row("index chunks after warm-up -> end", f"{chunks[0]:,} -> {chunks[1]:,}", "", "")
    table.add_row("HTTP searches (p50 / p99 ms)", f"{len(searches):,} ({1000 * statistics.median(searches):.1f} / "
                  f"{1000 * sorted(searches)[int(0.99 * (len(searches) - 1))]:.1f})", "", "")
    table.add_row("worker RSS after warm-up -> end (MiB)", f"{baseline / 2**20:.0f} -> {final / 2**20:.0f} "
                  f"({growth:+.1%})", "< +10%", ok(growth < 0.10))
    table.add_row("  of which anonymous (heaps) / file-backed (mapped store files)",
                  f"{anon_base / 2**20:.0f} -> {anon_final / 2**20:.0f} / {file_base / 2**20:.0f} -> "
                  f"{file_final / 2**20:.0f}", "", "")
    table.add_row("max consumer lag after warm-up (records)", f"{max_lag:,.0f}", "bounded", ok(max_lag < rate * 30))
    table.add_row("lag drained after producing stopped (s)", f"{drain_s:.1f}", "", "")
    table.add_row("store compactions (deleted points vacuumed)", f"{compactions:.0f}", "", "")
    table.add_row("error log lines", str(len(errors)), "0", ok(not errors))
    console.print(table)
    for line in errors[:10]:
        console.print(f"  {line}")
