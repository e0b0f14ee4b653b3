"""`gristmill bench query`, state backends side by side: the same index and the same queries served by two workers
at once, one keeping its state stores (query log, feedback state, evaluation store) in SQLite files, the other in
PostgreSQL (a throwaway server of the bench's own, fsync on, as SQLite's synchronous=FULL is). Requests alternate
between the two in short blocks (20 HTTP queries, 10 Kafka round trips), the one going first rotating from one block
to the next, so machine noise lands on both alike. Every answered query writes the query log and the evaluation
store before its answer returns: the write path is measured too.

Before the queries, each evaluation store is seeded with the same answers (100,000 by default) spread evenly over
the last 24 hours (one in five judged), and `GET /evaluation?since=1h` (the last hour's ~1/24 of them: an index
matters) and `?since=24h` (every one) are timed on each; the plans of the statements the endpoint issues are shown
(PostgreSQL: EXPLAIN ANALYZE after ANALYZE, as autovacuum would have run it; SQLite: EXPLAIN QUERY PLAN).
"""

from __future__ import annotations

import json
import random
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from streams.broker import EmbeddedBroker
from streams.devtools.bench_ingest import Row
from streams.devtools.postgres_server import PostgresServer
from streams.devtools.worker_process import WorkerProcess
from streams.ml.ranking import percentile
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.state.database import Database, Schema, TransactionKind
from streams.state.evaluation_store import AnswerRecord, EvaluationStore, JudgementRecord
from streams.state_databases import open_state_database
from streams.topics import create_topics

BACKENDS = ("sqlite", "postgresql")
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
#: PostgreSQL within 10% of SQLite at p50 and p99 (the issue's target).
TARGET_RATIO = 1.10
DAY_S = 86_400.0


def seed_answers(store: EvaluationStore, answers: int, now: float, *, model_version: str, span_s: float = DAY_S,
                 judged_every: int = 5, batch: int = 5_000, seed: int = 7) -> int:
    """`answers` served answers spread evenly over the `span_s` before `now` (oldest first, ten documents each,
    the slices varied), every `judged_every`-th query judged on two of its documents (the top one positive, another
    negative or neutral) a minute after its answer; written in batches as workers write them. Returns the
    judgements stored."""
    rng = random.Random(seed)
    step = span_s / max(1, answers)
    judged = 0
    for start in range(0, answers, batch):
        rows, judgements = [], []
        for i in range(start, min(answers, start + batch)):
            at = now - span_s + (i + 0.5) * step
            docs = [f"real-{d}" for d in rng.sample(range(100), 10)]
            rows.append(AnswerRecord(f"seed-{i:07d}", "serving", model_version, model_version,
                                     round(rng.gammavariate(4.0, 2.5), 3), docs, at,
                                     rng.choice(("short", "medium", "long")), rng.choice(("bench", "filler", "")),
                                     rng.choice(("", "free", "paid")), user_key=f"user-{rng.randrange(5_000)}"))
            if i % judged_every == 0:
                judgements += [JudgementRecord(f"seed-{i:07d}", docs[0], 1, at + 60.0),
                               JudgementRecord(f"seed-{i:07d}", docs[rng.randrange(1, 10)], rng.choice((-1, 0)),
                                               at + 60.0)]
        store.record_answers(rows)
        store.record_judgements(judgements)
        judged += len({(j.query_id, j.doc_id) for j in judgements})
    return judged


def alternating(calls: Mapping[str, Callable[[str], object]], queries: Sequence[str], block: int = 1
                ) -> dict[str, list[float]]:
    """The queries in blocks of `block`, each block to every backend in turn, the one going first rotating from one
    block to the next (A B, B A, ...); ms per call. With `block` > 1 each backend's turn starts with its block's
    first query untimed: a worker that idled through the other's turn is woken (one query at a time alternating
    per query measures the wake-ups: ~2.5x the latency on a 2-core machine), then measured warm, as the rest of
    the bench measures."""
    names = list(calls)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i, start in enumerate(range(0, len(queries), block)):
        part = queries[start:start + block]
        for name in names[i % len(names):] + names[:i % len(names)]:
            if block > 1:
                calls[name](part[0])
            for query in part:
                started = time.perf_counter()
                calls[name](query)
                out[name].append((time.perf_counter() - started) * 1000)
    return out


def backend_rows(label: str, measured: Mapping[str, Sequence[float]], *, target: float | None = TARGET_RATIO,
                 quantiles: Sequence[int] = (50, 99)) -> list[Row]:
    """PostgreSQL's latency at each quantile beside SQLite's (the baseline column; the speed-up column reads
    SQLite / PostgreSQL), then PostgreSQL / SQLite at every quantile in one row, against `target` when given."""
    rows, ratios = [], []
    for q in quantiles:
        pg, lite = percentile(measured["postgresql"], q), percentile(measured["sqlite"], q)
        ratios.append(pg / lite)
        rows.append(Row(f"{label} p{q} (ms), PostgreSQL (baseline: SQLite)", f"{pg:.1f}", f"{lite:.1f}",
                        lite / pg, f"within {target - 1:.0%}" if target else "",
                        None if target is None else pg / lite <= target))
    names = " / ".join(f"p{q}" for q in quantiles)
    rows.append(Row(f"{label}: PostgreSQL / SQLite, {names}", " / ".join(f"{r:.2f}x" for r in ratios),
                    target=f"<= {target:.2f}x" if target else "",
                    met=None if target is None else all(r <= target for r in ratios)))
    return rows


class RecordingDatabase:
    """A store's database that notes every read it is asked for (the statements an endpoint issues, to EXPLAIN)."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.store, self.dialect = inner.store, inner.dialect
        self.reads: list[tuple[str, tuple[Any, ...]]] = []

    def ensure(self, schema: Schema) -> None:
        self.inner.ensure(schema)

    def transaction(self, kind: TransactionKind = "serialized") -> Any:
        return self.inner.transaction(kind)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.inner.execute(sql, params)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.reads.append((sql, tuple(params)))
        return self.inner.fetchall(sql, params)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        """The inner database stays open (its owner closes it)."""


def distinct_reads(reads: Sequence[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...], int]]:
    """The first read of each kind (statements alike up to their WHERE: the IN batches of one lookup are one kind),
    with how many reads of that kind there were."""
    first: dict[str, tuple[str, tuple[Any, ...]]] = {}
    counts: dict[str, int] = {}
    for sql, params in reads:
        kind = sql.split(" WHERE ", 1)[0]
        first.setdefault(kind, (sql, params))
        counts[kind] = counts.get(kind, 0) + 1
    return [(sql, params, counts[kind]) for kind, (sql, params) in first.items()]


def explain(database: Database, sql: str, params: Sequence[Any]) -> list[str]:
    """The plan of one statement: PostgreSQL's EXPLAIN (ANALYZE, BUFFERS) (it runs the statement), SQLite's
    EXPLAIN QUERY PLAN."""
    if database.dialect == "postgresql":
        return [row[0] for row in database.fetchall("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)]
    return [row[3] for row in database.fetchall("EXPLAIN QUERY PLAN " + sql, params)]


def scan_of(plan: Sequence[str]) -> str:
    """How a plan reads its table: the first scan node (PostgreSQL; a bitmap heap scan with the index scan feeding
    it) or SCAN/SEARCH step (SQLite), trimmed."""
    scans = []
    for line in plan:
        text = line.strip().removeprefix("->").strip()
        if "Scan" in text or text.startswith(("SCAN", "SEARCH")):
            scans.append(text.split(" (")[0].strip())  # PostgreSQL's costs, SQLite's conditions
    if not scans:
        return plan[0].strip() if plan else ""
    if scans[0].startswith("Bitmap Heap Scan") and len(scans) > 1:
        return f"{scans[0]} <- {scans[1]}"
    return scans[0]


def indexed(scan: str) -> bool:
    """Whether a scan reads through an index (not the whole table)."""
    return "Index Scan" in scan or "Index Only Scan" in scan or \
        any(f"USING {kind}" in scan for kind in ("INDEX", "COVERING INDEX", "PRIMARY KEY", "INTEGER PRIMARY KEY"))


def get_json(url: str, path: str, timeout_s: float = 300.0, **params: Any) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{query}", timeout=timeout_s) as response:
        return json.load(response)


def evaluation_counts(body: Mapping[str, Any]) -> tuple[int, int]:
    """Answers and judged answers a `GET /evaluation` body summarizes (over its rows)."""
    return (sum(int(r.get("queries", 0)) for r in body["rows"]), sum(int(r.get("judged", 0)) for r in body["rows"]))


def table_of(sql: str) -> str:
    """The table a SELECT reads (the first after FROM)."""
    return sql.split(" FROM ", 1)[1].split()[0] if " FROM " in sql else "?"


def plan_report(database: Database, since: float) -> list[tuple[str, str, int, list[str]]]:
    """The reads `GET /evaluation` issues for answers since `since` (EvaluationStore.judged_answers, as
    streams.web.evaluation calls it), each kind EXPLAINed once: [(table, statement, times issued, plan)]."""
    recording = RecordingDatabase(database)
    EvaluationStore(recording).judged_answers(since=since)
    return [(table_of(sql), sql, times, explain(database, sql, params))
            for sql, params, times in distinct_reads(recording.reads)]


def clipped(text: str, width: int = 240) -> str:
    return text if len(text) <= width else text[:width] + "..."


def run_state_backends(settings: Settings, index_dir: Path, registry_dir: Path, root: Path, namespace: str,
                       model_version: str, queries: list[str], chunks: int, answers: int, console: Console,
                       requests: int = 1_000, kafka_requests: int = 300, evaluation_requests: int = 5) -> list[Row]:
    """The rows comparing the state backends (see the module's doc). `index_dir`: a worker's data dir whose
    qdrant index (`index_dir/qdrant`, no worker using it) each backend's worker gets a copy of."""
    bench = settings.model_copy(update={"namespace": namespace})
    rows: list[Row] = []
    with ExitStack() as stack:
        console.print("state backends: a PostgreSQL server (fsync on) beside SQLite files...")
        server = stack.enter_context(PostgresServer(durable=True))
        url = server.new_database()
        brokers = {backend: stack.enter_context(EmbeddedBroker()) for backend in BACKENDS}
        workers: dict[str, WorkerProcess] = {}
        now = time.time()
        for backend in BACKENDS:
            data_dir = root / f"state-{backend}"
            shutil.copytree(index_dir / "qdrant", data_dir / "qdrant")
            local = bench.model_copy(update={"data_dir": data_dir, "shared_dir": data_dir,
                                             "database_url": url if backend == "postgresql" else None,
                                             "kafka_bootstrap_servers": brokers[backend].bootstrap_servers})
            create_topics(local)
            console.print(f"seeding the {NAMES[backend]} evaluation store: {answers:,} answers over 24 h...")
            database = open_state_database(local, "evaluation store")
            try:
                seed_answers(EvaluationStore(database), answers, now, model_version=model_version)
                if backend == "postgresql":
                    database.execute("ANALYZE answers")  # as autovacuum would have after such growth
                    database.execute("ANALYZE judgements")
            finally:
                database.close()
            workers[backend] = WorkerProcess(data_dir, registry_dir, brokers[backend].bootstrap_servers, namespace,
                                             GRISTMILL_QUERY_CACHE_SIZE="0", GRISTMILL_SHARED_DIR=str(data_dir),
                                             GRISTMILL_DATABASE_URL=url if backend == "postgresql" else "")
        for worker in workers.values():
            stack.callback(worker.stop)
        with ThreadPoolExecutor(len(workers)) as starting:
            list(starting.map(lambda w: w.start(180), workers.values()))
        console.print("workers up (SQLite, PostgreSQL); GET /evaluation...")
        for since in ("1h", "24h"):
            bodies: dict[str, Any] = {b: get_json(w.url, "/evaluation", since=since) for b, w in workers.items()}
            counts = {b: evaluation_counts(body) for b, body in bodies.items()}
            timed = alternating({b: lambda s, w=w: get_json(w.url, "/evaluation", since=s)
                                 for b, w in workers.items()}, [since] * evaluation_requests)
            rows.append(Row(f"GET /evaluation?since={since}: answers / judged read (of {answers:,})",
                            "{:,} / {:,}".format(*counts["postgresql"]), "{:,} / {:,}".format(*counts["sqlite"])))
            rows += backend_rows(f"GET /evaluation?since={since}", timed, target=None, quantiles=(50,))
        since = time.time() - 3600
        for backend in BACKENDS:
            local = bench.model_copy(update={"data_dir": root / f"state-{backend}",
                                             "shared_dir": root / f"state-{backend}",
                                             "database_url": url if backend == "postgresql" else None})
            database = open_state_database(local, "evaluation store")
            try:
                report = plan_report(database, since)
            finally:
                database.close()
            console.print(f"{NAMES[backend]}: the reads of GET /evaluation?since=1h, each kind's plan:",
                          markup=False, highlight=False)
            for table, sql, times, plan in report:
                console.print(f"  {clipped(sql)}  [issued {times}x]", markup=False, highlight=False)
                for line in plan:
                    console.print(f"    {clipped(line)}", markup=False, highlight=False)
                scan = scan_of(plan)
                rows.append(Row(f"GET /evaluation?since=1h, {NAMES[backend]}: {table} read by ({times} "
                                f"{'read' if times == 1 else 'reads'})", clipped(scan, 72), target="an index",
                                met=indexed(scan)))

        console.print("HTTP latency, one query at a time, alternating SQLite / PostgreSQL...")
        calls = {b: lambda q, w=w: w.get("/search", q=q, k=10) for b, w in workers.items()}
        alternating(calls, queries[:30])  # warm-up
        asked = [queries[i % len(queries)] for i in range(requests)]
        rows += backend_rows(f"{chunks:,} chunks: HTTP", alternating(calls, asked, block=20))
        console.print("Kafka round trips, alternating SQLite / PostgreSQL...")
        kafka_ms = kafka_latencies({b: bench.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
                                    for b, broker in brokers.items()}, queries[:kafka_requests])
        rows += backend_rows(f"{chunks:,} chunks: Kafka round trip", kafka_ms)
    return rows


def kafka_latencies(settings: Mapping[str, Settings], queries: Sequence[str]) -> dict[str, list[float]]:
    """Kafka round trips alternating between the backends' brokers (after a warm-up); the clients are gone when this
    returns, before the brokers stop (none is left reconnecting)."""
    with ExitStack() as stack:
        trips = {b: stack.enter_context(QueryRoundTrip(s)) for b, s in settings.items()}

        def kafka(roundtrip: QueryRoundTrip) -> Callable[[str], object]:
            return lambda q: roundtrip.wait([roundtrip.send(q, 10)], 30)

        calls = {b: kafka(trip) for b, trip in trips.items()}
        alternating(calls, queries[:10])
        return alternating(calls, queries, block=10)
