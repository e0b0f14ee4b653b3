"""The feedback agent's rules, in process: judgements joined with the logged answers become pairs (hard negatives
from the served hits below a positive); feedback waits for its query, then expires; the policy asks to retrain; only
accepted feedback judges answers, and pairs and judgements follow the latest judgement of each document."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from schemas import RetrainRequest
from streams.devtools.harness import Harness, message
from streams.ml.evaluation import score, summarize
from streams.validation import RawMessage

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



def answered(tmp_path: Path, **settings: object) -> tuple[Harness, list[str]]:
    """A harness with the documents indexed and q-tea, q-other answered; q-tea's served documents, best first."""
    harness = Harness(tmp_path, **settings).register("ingest", "query", "feedback")
    harness.send("documents", [{"doc_id": d, "version": 1, "op": "upsert", "text": t} for d, t in DOCS.items()])
    harness.send("queries", [{"query_id": "q-tea", "text": "green tea steeped", "top_k": 3},
                             {"query_id": "q-other", "text": "bicycle chain oil", "top_k": 3}])
    logged = harness.shared.query_log.get("q-tea")
    assert logged is not None
    return harness, [hit["doc_id"] for hit in logged.response["hits"]]


def test_refused_feedback_does_not_lower_the_ndcg_of_the_judged_query(tmp_path: Path) -> None:
    harness, (top, *_) = answered(tmp_path, feedback_hold_s=0.2)
    with harness:
        harness.send("feedback", [{"query_id": "q-tea", "doc_id": top, "label": 1}]
                     + [{"query_id": "q-tea", "doc_id": f"nope-{i}", "label": 1} for i in range(3)]
                     + [{"query_id": "q-never", "doc_id": top, "label": 1}])
        time.sleep(0.3)
        harness.tick()  # q-never's feedback expires
        letters = harness.published("deadletter")
        assert sorted(letter.errors[0].loc for letter in letters) == ["doc_id"] * 3 + ["query_id"]  # type: ignore[attr-defined]
        evaluation = harness.shared.evaluation
        (serving,) = summarize([a for a in evaluation.answers() if a.query_id == "q-tea"], evaluation.judgements(),
                               ("arm",), ())
        assert (serving["judged"], serving["ndcg@10"], serving["mrr@10"]) == (1, 1.0, 1.0)
        assert evaluation.judgements() == {"q-tea": {top: 1}}  # only the accepted judgement counts


def test_a_refused_record_alone_judges_no_shadow_answer(tmp_path: Path) -> None:
    harness, _ = answered(tmp_path)
    with harness:
        harness.send("feedback", [{"query_id": "q-other", "doc_id": "nope", "label": 1}])  # unknown document
        assert len(harness.published("deadletter")) == 1
        (answer,) = [a for a in harness.shared.evaluation.answers() if a.query_id == "q-other"]
        judgements = harness.shared.evaluation.judgements()
        assert not score(replace(answer, arm="shadow"), judgements.get("q-other", {})).judged


def judge(harness: Harness, doc_id: str, offset: int, **judgement: int) -> RawMessage:
    """Send one feedback record on q-tea at `offset` (partition 0); returns it."""
    record = message("feedback", {"query_id": "q-tea", "doc_id": doc_id, **judgement}, "q-tea", offset=offset)
    harness.send("feedback", [record])
    return record


def judged(harness: Harness) -> tuple[set[tuple[str, str, str]], dict[str, int]]:
    """q-tea's training pairs (doc_id, kind, source) and its judgements in the evaluation store."""
    return ({(p.doc_id, p.kind, p.source) for p in harness.shared.pairs.for_query("q-tea")},
            harness.shared.evaluation.judgements().get("q-tea", {}))


def test_a_withdrawn_positive_takes_its_hard_negatives_with_it(tmp_path: Path) -> None:
    harness, served = answered(tmp_path)
    with harness:
        top = served[0]
        judge(harness, top, 0, label=1)
        assert judged(harness) == ({(top, "positive", "feedback")} | {(d, "negative", "served") for d in served[1:]},
                                   {top: 1})
        judge(harness, top, 1, label=-1)  # the user takes it back
        assert judged(harness) == ({(top, "negative", "feedback")}, {top: -1})


def test_a_later_neutral_rating_removes_the_explicit_negative_pair(tmp_path: Path) -> None:
    harness, served = answered(tmp_path)
    with harness:
        judge(harness, served[-1], 0, label=-1)
        assert judged(harness) == ({(served[-1], "negative", "feedback")}, {served[-1]: -1})
        judge(harness, served[-1], 1, rating=3)
        assert judged(harness) == (set(), {served[-1]: 0})


def test_an_older_judgement_re_delivered_after_a_newer_one_changes_nothing(tmp_path: Path) -> None:
    harness, served = answered(tmp_path)
    with harness:
        first = judge(harness, served[0], 0, label=1)
        judge(harness, served[0], 1, rating=3)
        harness.send("feedback", [first])  # re-delivered after a crash: the neutral rating still counts
        assert judged(harness) == (set(), {served[0]: 0})
        assert harness.published("deadletter") == []
