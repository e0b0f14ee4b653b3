"""The evaluation store: answers per arm, judgements, offline metrics, one live experiment per model."""

from pathlib import Path

import pytest

from streams.state.errors import ExperimentConflict
from streams.state.evaluation_store import AnswerRecord, EvaluationStore, ExperimentRecord


def answer(query_id: str, arm: str = "serving", at: float = 100.0) -> AnswerRecord:
    return AnswerRecord(query_id, arm, "v1", "v1", 5.0, ["a", "b"], at, "short", "docs", "", "e1", "u1",
                        {"a": "serving", "b": "candidate"} if arm == "interleave" else None)


def test_judged_answers_come_with_the_judgements_of_their_queries_only(tmp_path: Path) -> None:
    store = EvaluationStore(tmp_path / "evaluation.sqlite3")
    store.record_answers([answer("q1"), answer("q2", at=200.0), answer("q3", at=300.0)])
    store.record_answers([AnswerRecord("q4", "serving", "v1", "v1", 5.0, ["a"], 250.0, "short", "", "", "e2")])
    store.record_judgements([("q1", "a", 1, 101.0), ("q2", "b", -1, 201.0), ("q4", "a", 1, 251.0)])
    found = store.judged_answers(since=150.0)
    assert [a.query_id for a in found.answers] == ["q2", "q4", "q3"]
    assert found.judgements == {"q2": {"b": -1}, "q4": {"a": 1}}  # q1 is before the window
    mine = store.judged_answers(experiment="e1")
    assert [a.query_id for a in mine.answers] == ["q1", "q2", "q3"] and set(mine.judgements) == {"q1", "q2"}


def experiment(id_: str, state: str = "building", model: str = "minilm") -> ExperimentRecord:
    return ExperimentRecord(id_, model, "v2", "v1", "split", 0.5, state, 50.0)


def test_answers_judgements_and_offline_metrics_survive_a_reopen(tmp_path: Path) -> None:
    store = EvaluationStore(tmp_path / "evaluation.sqlite3")
    store.record_answers([answer("q1"), answer("q1", "shadow"), answer("q2", "interleave", at=200.0)])
    store.record_answers([answer("q1")])  # a re-delivered query overwrites its row
    store.record_judgements([("q1", "a", 1, 101.0), ("q1", "b", -1, 101.0)])
    store.record_judgements([("q1", "b", 1, 102.0)])  # the latest judgement counts
    store.record_offline("v2", {"held_out_nDCG@10": 0.5})
    store.close()
    store = EvaluationStore(tmp_path / "evaluation.sqlite3")
    assert sorted((a.query_id, a.arm) for a in store.answers()) == [("q1", "serving"), ("q1", "shadow"),
                                                                    ("q2", "interleave")]
    assert store.answers(since=150.0)[0].credits == {"a": "serving", "b": "candidate"}
    assert store.judgements(["q1", "q2"]) == {"q1": {"a": 1, "b": 1}}
    assert store.offline() == {"v2": {"held_out_nDCG@10": 0.5}}
    assert store.prune(max_age_s=50.0, now=220.0) == 2 + 2  # two answers and two judgements before 170
    assert [a.query_id for a in store.answers()] == ["q2"]


def test_one_live_experiment_per_model_and_transitions_happen_once(tmp_path: Path) -> None:
    store = EvaluationStore(tmp_path / "evaluation.sqlite3")
    store.start_experiment(experiment("e1"))
    with pytest.raises(ExperimentConflict):
        store.start_experiment(experiment("e2"))
    store.start_experiment(experiment("e3", model="other"))  # another model may run its own
    assert store.transition("e1", ("building",), "running")
    assert not store.transition("e1", ("building",), "running")  # someone moved it already
    assert store.transition("e1", ("running",), "stopped", decision="stop", reason="guardrail",
                            evidence={"judged": 3}, ended=True, now=60.0)
    stopped = store.experiments("minilm")[0]
    assert (stopped.state, stopped.decision, stopped.reason, stopped.evidence, stopped.ended_at) == (
        "stopped", "stop", "guardrail", {"judged": 3}, 60.0)
    assert store.active("minilm") is None
    with pytest.raises(ExperimentConflict):
        store.start_experiment(experiment("e1"))  # an id is never reused
    store.start_experiment(experiment("e4"))
    assert store.active("minilm").id == "e4"  # type: ignore[union-attr]
    assert store.transition("e4", ("building",), "promoted", decision="promote", reason="better", ended=True)
    store.start_experiment(experiment("e5"))  # a promotion still watched ends when the next experiment starts
    states = {e.id: (e.state, e.reason) for e in store.experiments("minilm")}
    assert states["e4"] == ("finished", "better; watch ended: experiment e5 started")
    assert states["e5"][0] == "building"
