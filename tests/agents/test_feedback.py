"""The feedback agent's rules, in process: judgements joined with the logged answers become pairs (hard negatives
from the served hits below a positive); feedback waits for its query, then expires; the policy asks to retrain."""

from __future__ import annotations

import time
from pathlib import Path

from schemas import RetrainRequest
from streams.devtools.harness import Harness

DOCS = {"tea": "Green tea is steeped at eighty degrees.", "coffee": "Espresso is brewed hot and fast.",
        "bikes": "Oil the bicycle chain every few hundred kilometres."}


def test_feedback_becomes_pairs_waits_for_its_query_and_asks_for_a_retrain(tmp_path: Path) -> None:
    with Harness(tmp_path, feedback_hold_s=0.2, retrain_every_positive_pairs=2).register(
            "ingest", "query", "feedback") as harness:
        harness.send("documents", [{"doc_id": d, "version": 1, "op": "upsert", "text": t} for d, t in DOCS.items()])
        harness.send("feedback", [{"query_id": "q-early", "doc_id": "coffee", "rating": 5}])  # before its query
        assert harness.shared.pairs.count() == 0 and len(harness.shared.pairs.held()) == 1
        harness.send("queries", [{"query_id": "q-early", "text": "espresso brewed", "top_k": 3},
                                 {"query_id": "q-tea", "text": "green tea steeped", "top_k": 3}])
        harness.tick()  # the held feedback joins its now-logged answer
        harness.send("feedback", [{"query_id": "q-tea", "doc_id": "tea", "label": 1},
                                  {"query_id": "q-never", "doc_id": "tea", "label": 1}])
        pairs = harness.shared.pairs
        assert ("coffee", "positive") in {(p.doc_id, p.kind) for p in pairs.for_query("q-early")}
        tea = {(p.doc_id, p.kind, p.source) for p in pairs.for_query("q-tea")}
        assert ("tea", "positive", "feedback") in tea and any(kind == "negative" for _, kind, _ in tea)
        (request,) = harness.published("retrain")
        assert isinstance(request, RetrainRequest) and request.reason == "feedback"
        assert pairs.claim_unpublished_retrains(time.time() + 3600) == []  # published and marked: never again

        time.sleep(0.3)
        harness.tick()  # q-never's feedback waited past feedback_hold_s: a dead letter with the reason
        (letter,) = harness.published("deadletter")
        assert letter.errors[0].loc == "query_id" and "no logged query" in letter.errors[0].msg  # type: ignore[attr-defined]
        assert pairs.held() == []
