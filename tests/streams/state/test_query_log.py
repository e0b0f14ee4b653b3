from __future__ import annotations

from pathlib import Path

from streams.state.query_log import LoggedQuery, QueryLog


def entry(query_id: str, at: float, doc: str = "d1") -> LoggedQuery:
    return LoggedQuery(query_id, {"query_id": query_id, "text": "tea"},
                       {"query_id": query_id, "hits": [{"doc_id": doc}], "model_version": "v1",
                        "index_version": "v1"}, at, "kafka")


def test_queries_survive_a_reopen_and_redelivery_overwrites(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.sqlite3")
    log.record([entry("q1", 1.0), entry("q2", 2.0)])
    log.record([entry("q1", 3.0, doc="d9")])  # the same query answered again (at-least-once)
    log.close()
    reopened = QueryLog(tmp_path / "q.sqlite3")
    assert reopened.count() == 2
    q1 = reopened.get("q1")
    assert q1 is not None and q1.response["hits"][0]["doc_id"] == "d9" and q1.via == "kafka"
    assert reopened.get("missing") is None
    assert [e.query_id for e in reopened.since(1.5)] == ["q2", "q1"]
    reopened.close()


def test_recent_is_newest_first(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.sqlite3")
    log.record([entry(f"q{i}", float(i)) for i in range(5)])
    assert [e.query_id for e in log.recent(3)] == ["q4", "q3", "q2"]
    log.close()
