"""The query log's contract, on SQLite and PostgreSQL: bounded text, first answer kept, pruned by age and rows."""

from __future__ import annotations

from streams.state.query_log import LoggedQuery, QueryLog
from tests.conftest import StateDatabases


def entry(query_id: str, at: float, text: str = "q") -> LoggedQuery:
    return LoggedQuery(query_id, {"text": text, "top_k": 1}, {"hits": [{"doc_id": "d", "text": text * 2}],
                                                              "model_version": "v1", "index_version": "v1"}, at, "http")


def test_texts_are_cut_and_old_or_surplus_entries_pruned(state_databases: StateDatabases) -> None:
    log = QueryLog(state_databases.open("query log"), text_chars=100)
    try:
        log.record([entry("long", 1_000.0, "x" * 10_000)])
        logged = log.get("long")
        assert logged is not None and len(logged.query["text"]) == 101
        assert len(logged.response["hits"][0]["text"]) == 101
        log.record([entry(f"q{i}", 2_000.0 + i) for i in range(10)])
        assert log.prune(max_rows=5, max_age_s=500.0, now=2_400.0) == 6  # "long" by age, 5 oldest by rows
        assert sorted(e.query_id for e in log.since(0)) == [f"q{i}" for i in range(5, 10)]
    finally:
        log.close()


def test_a_query_answered_again_keeps_its_first_answer(state_databases: StateDatabases) -> None:
    log = QueryLog(state_databases.open("query log"))
    try:
        log.record([entry("q", 1_000.0, "first")])
        log.record([entry("q", 1_001.0, "again")])  # re-delivered after a rebalance, answered by another worker
        logged = log.get("q")
        assert logged is not None and logged.query["text"] == "first" and logged.answered_at == 1_000.0
        assert log.count() == 1
    finally:
        log.close()
