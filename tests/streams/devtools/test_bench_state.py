"""The state-backend comparison of `gristmill bench query`: seeding, alternation, rows, plans (no timings)."""

from __future__ import annotations

import time

from streams.devtools.bench_state import (
    RecordingDatabase,
    alternating,
    backend_rows,
    distinct_reads,
    indexed,
    plan_report,
    scan_of,
    seed_answers,
)
from streams.state.evaluation_store import EvaluationStore
from tests.conftest import StateDatabases


def test_alternating_rotates_which_backend_goes_first() -> None:
    order: list[tuple[str, str]] = []
    calls = {name: (lambda q, name=name: order.append((name, q))) for name in ("sqlite", "postgresql")}
    measured = alternating(calls, ["a", "b", "c"])
    assert order == [("sqlite", "a"), ("postgresql", "a"), ("postgresql", "b"), ("sqlite", "b"),
                     ("sqlite", "c"), ("postgresql", "c")]
    assert {name: len(ms) for name, ms in measured.items()} == {"sqlite": 3, "postgresql": 3}
    assert all(ms >= 0 for values in measured.values() for ms in values)
    order.clear()
    blocks = alternating(calls, ["a", "b", "c", "d"], block=2)  # each turn starts with its first query untimed
    assert order == [("sqlite", "a"), ("sqlite", "a"), ("sqlite", "b"), ("postgresql", "a"), ("postgresql", "a"),
                     ("postgresql", "b"), ("postgresql", "c"), ("postgresql", "c"), ("postgresql", "d"),
                     ("sqlite", "c"), ("sqlite", "c"), ("sqlite", "d")]
    assert {name: len(ms) for name, ms in blocks.items()} == {"sqlite": 4, "postgresql": 4}


def test_backend_rows_put_postgresql_beside_sqlite_against_the_target() -> None:
    rows = backend_rows("HTTP", {"sqlite": [10.0] * 98 + [20.0] * 2, "postgresql": [10.5] * 98 + [30.0] * 2})
    p50, p99, ratio = rows
    assert (p50.value, p50.baseline, p50.target, p50.met) == ("10.5", "10.0", "within 10%", True)
    assert abs(p50.ratio - 10.0 / 10.5) < 1e-9  # type: ignore[operator]  # the speed-up column: SQLite / PostgreSQL
    assert (p99.value, p99.baseline, p99.met) == ("30.0", "20.0", False)
    assert (ratio.value, ratio.target, ratio.met) == ("1.05x / 1.50x", "<= 1.10x", False)
    untargeted = backend_rows("GET /evaluation", {"sqlite": [4.0], "postgresql": [2.0]}, target=None,
                              quantiles=(50,))
    assert [(r.value, r.target, r.met) for r in untargeted] == [("2.0", "", None), ("0.50x", "", None)]


def test_scans_are_read_from_either_plan() -> None:
    postgres = ["Limit  (cost=3519.24..3529.72 rows=4193 width=223)", "  ->  Sort  (cost=1..2 rows=1 width=1)",
                "        ->  Bitmap Heap Scan on answers  (cost=111.27..3266.95 rows=4193 width=223)",
                "              ->  Bitmap Index Scan on answers_answered_at  (cost=0.00..110.22 rows=4193 width=0)"]
    assert scan_of(postgres) == "Bitmap Heap Scan on answers <- Bitmap Index Scan on answers_answered_at"
    assert indexed(scan_of(postgres))
    assert indexed("Index Scan Backward using answers_answered_at on answers")
    assert not indexed(scan_of(["Seq Scan on judgements  (cost=1.25..1007.88 rows=993 width=24)"]))
    sqlite = ["SEARCH answers USING INDEX answers_answered_at (answered_at>? AND answered_at<?)"]
    assert scan_of(sqlite) == "SEARCH answers USING INDEX answers_answered_at" and indexed(scan_of(sqlite))
    assert not indexed("SCAN judgements")


def test_distinct_reads_group_the_batches_of_one_lookup() -> None:
    reads = [("SELECT a FROM answers WHERE x >= ?", (1,)), ("SELECT j FROM judgements WHERE q IN (?,?)", ("a", "b")),
             ("SELECT j FROM judgements WHERE q IN (?)", ("c",))]
    assert distinct_reads(reads) == [("SELECT a FROM answers WHERE x >= ?", (1,), 1),
                                     ("SELECT j FROM judgements WHERE q IN (?,?)", ("a", "b"), 2)]


def test_seeded_answers_spread_over_a_day_and_their_reads_are_explained(state_databases: StateDatabases) -> None:
    database = state_databases.open("evaluation store")
    now = time.time()
    judged = seed_answers(EvaluationStore(database), 240, now, model_version="base", batch=100)
    assert judged == 2 * 48  # every fifth query, two documents each
    store = EvaluationStore(database)
    assert len(store.answers()) == 240
    last_hour = store.judged_answers(since=now - 3600)
    assert len(last_hour.answers) == 10 and all(now - 3600 <= a.answered_at < now for a in last_hour.answers)
    assert len(last_hour.judgements) == 2 and all(len(docs) == 2 for docs in last_hour.judgements.values())
    report = plan_report(database, now - 3600)
    assert [(table, times) for table, _, times, _ in report] == [("answers", 1), ("judgements", 1)]
    assert all(plan for _, _, _, plan in report)
    recording = RecordingDatabase(database)
    EvaluationStore(recording).judged_answers(since=now - 86_400 - 1)
    assert [times for _, _, times in distinct_reads(recording.reads)] == [1, 1]  # 240 answers: one IN batch
