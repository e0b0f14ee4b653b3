"""A locked query log and feedback state (another process holds SQLite's write lock longer than the busy timeout)
pause the query and feedback agents instead of losing their writes: they are retried with backoff, the stores are
named as failing meanwhile (`/health` says degraded), and afterwards every query is logged and every feedback
joined, with no dead letter. Before, one failed write left the connection in a dead transaction for good."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from streams.devtools.harness import Harness, message

DOCS = {"tea": "Green tea is steeped at eighty degrees.", "coffee": "Espresso is brewed hot and fast."}


def hold_locks(paths: list[Path], seconds: float, taken: threading.Event) -> None:
    connections = [sqlite3.connect(str(p), isolation_level=None, timeout=0.1) for p in paths]
    for connection in connections:
        connection.execute("BEGIN EXCLUSIVE")
    taken.set()
    time.sleep(seconds)
    for connection in connections:
        connection.execute("ROLLBACK")
        connection.close()


def test_locked_state_pauses_and_retries_and_loses_nothing(tmp_path: Path) -> None:
    with Harness(tmp_path, sqlite_busy_timeout_s=0.2, store_retry_max_s=0.2,
                 retrain_every_positive_pairs=1000).register("ingest", "query", "feedback") as harness:
        harness.send("documents", [{"doc_id": d, "version": 1, "op": "upsert", "text": t} for d, t in DOCS.items()])
        settings = harness.settings
        queries = [{"query_id": f"q{i}", "text": "green tea", "top_k": 2} for i in range(20)]
        feedback = [{"query_id": f"q{i}", "doc_id": "tea", "label": 1} for i in range(20)]
        failing: dict[str, str] = {}

        def locked_while(path: Path, send: str, records: list[dict[str, object]]) -> None:
            taken = threading.Event()
            holder = threading.Thread(target=hold_locks, args=([path], 1.5, taken))
            holder.start()
            assert taken.wait(5)
            seen: dict[str, str] = {}

            def watch() -> None:  # what /health reports while the agents retry
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not seen:
                    seen.update(harness.shared.threads.failing())
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch)
            watcher.start()
            harness.send(send, records)  # returns once the batch is done: after the lock is gone
            watcher.join()
            holder.join()
            failing.update(seen)

        harness.send("queries", queries[:10])
        locked_while(settings.query_log_path, "queries", queries[10:])
        locked_while(settings.pairs_path, "feedback", feedback)
        assert set(failing) == {"query log", "feedback state"}
        assert harness.shared.threads.failing() == {}  # recovered: /health says ok again
        assert harness.shared.query_log.count() == 20
        assert {p.query_id for p in harness.shared.pairs.pairs() if p.kind == "positive"} == {f"q{i}" for i in
                                                                                            range(20)}
        assert harness.published("deadletter") == []
        assert harness.shared.pairs.held() == []


def test_a_retrain_waits_out_a_locked_feedback_state_instead_of_becoming_a_dead_letter(tmp_path: Path) -> None:
    with Harness(tmp_path, sqlite_busy_timeout_s=0.2, store_retry_max_s=0.2).register("trainer") as harness:
        taken = threading.Event()
        holder = threading.Thread(target=hold_locks, args=([harness.settings.pairs_path], 1.5, taken))
        holder.start()
        assert taken.wait(5)
        request = {"reason": "manual", "pairs": 0, "requested_at": "2026-12-05T12:00:00Z"}
        harness.send("retrain", [message("retrain", request, "minilm")])  # done once the lock is gone
        holder.join()
        (run,) = harness.shared.pairs.trainings()
        assert run["status"] == "skipped"  # no pairs yet: decided after the outage, not dead-lettered during it
        assert harness.published("deadletter") == []
