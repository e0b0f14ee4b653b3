"""The query agent's rules, in process: one response per valid query, stamped with the versions, in order;
filters, the cache, bad queries dead-lettered, every answer logged."""

from __future__ import annotations

from pathlib import Path

from schemas import QueryResponse
from streams.devtools.harness import Harness, message
from streams.ml.serving import serving_pair
from streams.settings import Settings
from streams.state.hashing_encoder import HashingEncoder
from streams.state.memory_store import InMemoryVectorStore
from streams.state.store import PUBLIC
from streams.validation import RECORD_OVERHEAD_BYTES

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


class ExplodingStore(InMemoryVectorStore):
    """Raises for searches filtered on source `boom` (a search the store cannot answer)."""

    def search(self, query, limit, filter_=None, access=PUBLIC):  # type: ignore[no-untyped-def]
        if (filter_ or {}).get("source") == "boom":
            raise ValueError("the store cannot answer this search")
        return super().search(query, limit, filter_, access)


def test_a_query_that_fails_costs_only_itself(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = ExplodingStore("chunks", 64)
    opener = lambda model: serving_pair(settings, model, HashingEncoder(model.version, 64), store)  # noqa: E731
    with Harness(tmp_path, opener=opener).register("ingest", "query") as harness:
        harness.send("documents", [{"doc_id": d, "version": 1, "op": "upsert", "text": t, "source": s}
                                   for d, (t, s) in DOCS.items()])
        harness.send("queries", [
            {"query_id": "before", "text": "green tea", "top_k": 1},
            {"query_id": "poison", "text": "green tea", "top_k": 1, "filter": {"source": "boom"}},
            message("queries", b'{"query_id": "typed", "text": "x", "filter": {"version": 1.5}}', "typed", offset=2),
            {"query_id": "after", "text": "bicycle chain", "top_k": 1},
        ])
        assert [r.query_id for r in harness.published("responses")] == ["before", "after"]  # type: ignore[attr-defined]
        letters = {letter.key: letter for letter in harness.published("deadletter")}  # type: ignore[attr-defined]
        assert letters["poison"].exception == "ValueError" and letters["typed"].errors[0].loc == "filter"


def test_no_answer_shows_a_deleted_or_replaced_document(tmp_path: Path) -> None:
    with Harness(tmp_path, query_cache_ttl_s=3600).register("ingest", "query") as harness:
        harness.send("documents", [{"doc_id": "h1", "version": 1, "op": "upsert", "text": "Heron nests by the lake."},
                                   {"doc_id": "h2", "version": 1, "op": "upsert", "text": "Otters swim in rivers."}])
        ask = {"text": "heron nests lake", "top_k": 2}
        harness.send("queries", [{"query_id": "q1", **ask}])
        harness.send("queries", [{"query_id": "q2", **ask}])
        harness.send("documents", [{"doc_id": "h1", "version": 2, "op": "delete"}])
        harness.send("queries", [{"query_id": "q3", **ask}])
        harness.send("documents", [{"doc_id": "h2", "version": 2, "op": "upsert", "text": "Otters now rest."}])
        harness.send("queries", [{"query_id": "q4", **ask}])
        answers = {r.query_id: r for r in harness.published("responses")}  # type: ignore[attr-defined]
        assert answers["q2"].cached and answers["q1"].hits[0].doc_id == "h1"
        assert not answers["q3"].cached and "h1" not in [h.doc_id for h in answers["q3"].hits]
        assert not answers["q4"].cached and [h.text for h in answers["q4"].hits] == ["Otters now rest."]


def test_a_thousand_long_multibyte_hits_fit_the_producer_in_bytes(tmp_path: Path) -> None:
    """The producer's limit is in bytes: a response is sized after encoding, its texts shortened with "…"."""
    settings = Settings(data_dir=tmp_path)
    text = " ".join(["ééééé üüüü ñññ"] * 120)  # two bytes a character in UTF-8
    with Harness(tmp_path).register("ingest", "query") as harness:
        harness.send("documents", [{"doc_id": f"d{n}", "version": 1, "op": "upsert", "text": f"{n} {text}"}
                                   for n in range(1000)])
        harness.send("queries", [{"query_id": "big", "text": "ééééé üüüü", "top_k": 1000, "mode": "dense"}])
        (response,) = [r for r in harness.published("responses") if isinstance(r, QueryResponse)]
    encoded = response.model_dump_json().encode()
    assert len(encoded) + len(b"big") + RECORD_OVERHEAD_BYTES <= settings.deadletter_max_bytes
    assert len(response.hits) == 1000 and all(hit.text.endswith("…") for hit in response.hits)


NOTES = [{"doc_id": "menu", "version": 1, "op": "upsert", "text": "the quarterly plan for the canteen menu"},
         {"doc_id": "roadmap", "version": 1, "op": "upsert", "text": "the quarterly plan for the engine roadmap",
          "acl": ["group:eng"]},
         {"doc_id": "salary", "version": 1, "op": "upsert", "text": "the quarterly plan for bob's salary",
          "acl": ["user:bob"]}]


def test_a_query_is_answered_from_what_its_principals_may_read(tmp_path: Path) -> None:
    asked = {"anyone": None, "nobody": [], "eng": ["group:eng", "user:carol"], "bob": ["user:bob"],
             "both": ["user:bob", "group:eng"]}
    with Harness(tmp_path, query_cache_ttl_s=3600).register("ingest", "query") as harness:
        harness.send("documents", NOTES)
        for round_ in ("first", "cached"):
            for mode in ("dense", "sparse", "hybrid"):
                harness.send("queries", [{"query_id": f"{round_}-{mode}-{who}", "text": "quarterly plan",
                                          "top_k": 10, "mode": mode, "principals": principals}
                                         for who, principals in asked.items()])
        answers = {r.query_id: r for r in harness.published("responses")}  # type: ignore[attr-defined]
    expected = {"anyone": {"menu"}, "nobody": {"menu"}, "eng": {"menu", "roadmap"}, "bob": {"menu", "salary"},
                "both": {"menu", "roadmap", "salary"}}
    assert {qid: {h.doc_id for h in r.hits} for qid, r in answers.items()} == {
        f"{round_}-{mode}-{who}": docs for round_ in ("first", "cached") for mode in ("dense", "sparse", "hybrid")
        for who, docs in expected.items()}
    assert all(r.cached for qid, r in answers.items() if qid.startswith("cached"))


def test_principals_can_be_required_of_every_query(tmp_path: Path) -> None:
    with Harness(tmp_path, query_principals_required=True).register("ingest", "query") as harness:
        harness.send("documents", NOTES)
        harness.send("queries", [{"query_id": "unsigned", "text": "quarterly plan"},
                                 {"query_id": "signed", "text": "quarterly plan", "principals": ["user:bob"]},
                                 {"query_id": "bad", "text": "quarterly plan", "principals": ["user bob"]}])
        answers = {r.query_id: r for r in harness.published("responses")}  # type: ignore[attr-defined]
        letters = {letter.key: letter for letter in harness.published("deadletter")}  # type: ignore[attr-defined]
    assert list(answers) == ["signed"] and {h.doc_id for h in answers["signed"].hits} == {"menu", "salary"}
    assert {key: [e.loc for e in letter.errors] for key, letter in letters.items()} == {
        "unsigned": ["principals"], "bad": ["principals.0"]}
