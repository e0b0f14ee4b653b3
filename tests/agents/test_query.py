"""The query agent's rules, in process: one response per valid query, stamped with the versions, in order;
filters, the cache, bad queries dead-lettered, every answer logged."""

from __future__ import annotations

from pathlib import Path

from schemas import QueryResponse
from streams.devtools.harness import Harness, message

DOCS = {"tea": ("Green tea is steeped at eighty degrees for two minutes.", "kitchen"),
        "bikes": ("Oil the bicycle chain every few hundred kilometres.", "workshop")}


def test_queries_are_answered_filtered_cached_and_logged(tmp_path: Path) -> None:
    with Harness(tmp_path).register("ingest", "query") as harness:
        harness.send("documents", [{"doc_id": d, "version": 1, "op": "upsert", "text": t, "source": s}
                                   for d, (t, s) in DOCS.items()])
        harness.send("queries", [
            {"query_id": "q1", "text": "green tea steeped", "top_k": 1},
            {"query_id": "q2", "text": "green tea steeped", "top_k": 2, "filter": {"source": "workshop"}},
            message("queries", b'{"query_id": "q3", "text": ""}', "q3", offset=2),
        ])
        harness.send("queries", [{"query_id": "q4", "text": "GREEN  tea steeped", "top_k": 1}])
        responses = {r.query_id: r for r in harness.published("responses") if isinstance(r, QueryResponse)}
        assert list(responses) == ["q1", "q2", "q4"]
        assert [h.doc_id for h in responses["q1"].hits] == ["tea"]
        assert [h.doc_id for h in responses["q2"].hits] == ["bikes"]  # the filter holds
        assert responses["q4"].cached and not responses["q1"].cached
        assert {(r.model_version, r.index_version) for r in responses.values()} == {("v1", "v1")}
        (letter,) = harness.published("deadletter")
        assert letter.errors[0].loc == "text"  # type: ignore[attr-defined]
        logged = harness.shared.query_log.get("q2")
        assert logged is not None and logged.via == "kafka" and logged.response["hits"][0]["doc_id"] == "bikes"
