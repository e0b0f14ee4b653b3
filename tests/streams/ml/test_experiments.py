"""Routing, team-draft interleaving and guarded decisions of live experiments."""

from streams.ml.experiments import Guardrails, decide, exposed, team_draft
from streams.state.evaluation_store import AnswerRecord, ExperimentRecord
from streams.state.store import SearchHit

RAILS = Guardrails(metric="mrr@10", margin=0.0, min_judged=40, positive_rate_drop=0.05, latency_ratio=2.0,
                   min_latency_queries=20, watch_s=100.0)


def hit(doc: str, chunk: int = 0) -> SearchHit:
    return SearchHit(doc, chunk, 1.0, doc)


def experiment(mode: str, state: str = "running", **kwargs: object) -> ExperimentRecord:
    return ExperimentRecord("e1", "minilm", "v2", "v1", mode, 0.5, state, 0.0, **kwargs)  # type: ignore[arg-type]


def test_exposure_is_deterministic_and_near_the_fraction() -> None:
    keys = [f"user-{i}" for i in range(4000)]
    assert [exposed(k, 0.2, "e1") for k in keys] == [exposed(k, 0.2, "e1") for k in keys]
    share = sum(exposed(k, 0.2, "e1") for k in keys) / len(keys)
    assert 0.17 < share < 0.23
    assert all(exposed(k, 1.0, "e1") for k in keys[:100])
    assert [exposed(k, 0.5, "e1") for k in keys[:200]] != [exposed(k, 0.5, "e2") for k in keys[:200]]


def test_team_draft_alternates_credits_and_never_repeats_a_document() -> None:
    serving = [hit("a"), hit("b"), hit("c"), hit("d")]
    candidate = [hit("b"), hit("e"), hit("a"), hit("f")]
    merged, credits = team_draft(serving, candidate, 4, "q1", by_document=True)
    docs = [h.doc_id for h in merged]
    assert len(docs) == len(set(docs)) == 4
    assert docs[0] in ("a", "b")  # each team's first pick is its best hit
    assert sorted(credits.values()).count("serving") == 2  # two picks each
    assert merged == team_draft(serving, candidate, 4, "q1", by_document=True)[0]  # deterministic per query
    merged, credits = team_draft(serving, [], 3, "q2", by_document=True)
    assert [h.doc_id for h in merged] == ["a", "b", "c"] and set(credits.values()) == {"serving"}


def split_answers(candidate_mrr_good: bool, n: int = 100, candidate_latency: float = 10.0
                  ) -> tuple[list[AnswerRecord], dict[str, dict[str, int]]]:
    answers, judgements = [], {}
    for i in range(n):
        arm = "candidate" if i % 2 else "serving"
        good_first = (arm == "candidate") == candidate_mrr_good or i % 8 == 0
        docs = ["good", "bad"] if good_first else ["bad", "x", "good"]
        answers.append(AnswerRecord(f"q{i}", arm, "v2" if arm == "candidate" else "v1", "v1",
                                    candidate_latency if arm == "candidate" else 10.0, docs, float(i), "short", "", "",
                                    "e1", f"u{i}"))
        judgements[f"q{i}"] = {"good": 1}
    return answers, judgements


def test_a_better_split_candidate_is_promoted_with_its_evidence() -> None:
    answers, judgements = split_answers(candidate_mrr_good=True)
    decision, evidence = decide(experiment("split"), answers[:40], judgements, RAILS)
    assert decision is None  # 20 judged per arm: not enough yet
    decision, evidence = decide(experiment("split"), answers, judgements, RAILS)
    assert decision is not None and decision.action == "promote"
    assert evidence["mrr@10_low"] > 0 and evidence["judged_candidate"] == 50


def test_guardrails_stop_a_worse_or_slower_candidate() -> None:
    answers, judgements = split_answers(candidate_mrr_good=False)
    for i in range(0, 100, 2):  # the candidate's users stop finding anything good
        judgements[f"q{i + 1}"] = {"bad": -1, "x": -1}
    decision, _ = decide(experiment("split"), answers, judgements, RAILS)
    assert decision is not None and decision.action == "stop" and "positive rate" in decision.reason
    answers, judgements = split_answers(candidate_mrr_good=True, candidate_latency=50.0)
    decision, _ = decide(experiment("split"), answers[:30], judgements, RAILS)
    assert decision is None  # 15 queries per arm: too few to judge latency
    decision, _ = decide(experiment("split"), answers, judgements, RAILS)
    assert decision is not None and decision.action == "stop" and "latency" in decision.reason


def test_a_shadow_is_scored_on_the_serving_answers_judgements() -> None:
    answers, judgements = [], {}
    for i in range(60):
        answers.append(AnswerRecord(f"q{i}", "serving", "v1", "v1", 10.0, ["good", "bad"], float(i), "short", "",
                                    "", "e1", ""))
        answers.append(AnswerRecord(f"q{i}", "shadow", "v2", "v2", 12.0, ["bad", "x", "y"], float(i), "short", "",
                                    "", "e1", ""))
        judgements[f"q{i}"] = {"good": 1}
    decision, evidence = decide(experiment("shadow"), answers, judgements, RAILS)
    assert decision is not None and decision.action == "stop"
    assert evidence["positive_rate_candidate"] == 0.0 and evidence["positive_rate_serving"] == 1.0


def test_a_promoted_candidate_that_regresses_is_rolled_back_and_one_that_holds_finishes() -> None:
    promoted = experiment("split", state="promoted", ended_at=100.0,
                          evidence={"positive_rate_serving": 0.9, "latency_p99_serving_ms": 10.0})
    after = [AnswerRecord(f"p{i}", "serving", "v2", "v2", 10.0, ["a"], 100.0 + i, "short", "", "", "", "")
             for i in range(50)]
    bad = {f"p{i}": {"a": 1 if i % 2 else -1} for i in range(50)}
    decision, _ = decide(promoted, after, bad, RAILS, now=150.0)
    assert decision is not None and decision.action == "rollback"
    good = {f"p{i}": {"a": 1} for i in range(50)}
    assert decide(promoted, after, good, RAILS, now=150.0)[0] is None
    decision, _ = decide(promoted, after, good, RAILS, now=201.0)
    assert decision is not None and decision.action == "finish"
