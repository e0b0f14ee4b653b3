"""The evaluation store's contract, on SQLite and PostgreSQL: answers per arm, judgements, offline metrics, one
live experiment per model."""

import sqlite3
from pathlib import Path

import pytest

from streams.state.errors import ExperimentConflict
from streams.state.evaluation_store import AnswerRecord, EvaluationStore, ExperimentRecord, JudgementRecord
from tests.conftest import StateDatabases


def answer(query_id: str, arm: str = "serving", at: float = 100.0) -> AnswerRecord:
    return AnswerRecord(query_id, arm, "v1", "v1", 5.0, ["a", "b"], at, "short", "docs", "", "e1", "u1",
                        {"a": "serving", "b": "candidate"} if arm == "interleave" else None)


def test_judged_answers_come_with_the_judgements_of_their_queries_only(state_databases: StateDatabases) -> None:
    store = EvaluationStore(state_databases.open("evaluation store"))
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


def test_answers_judgements_and_offline_metrics_survive_a_reopen(state_databases: StateDatabases) -> None:
    store = EvaluationStore(state_databases.open("evaluation store"))
    store.record_answers([answer("q1"), answer("q1", "shadow"), answer("q2", "interleave", at=200.0)])
    store.record_answers([answer("q1")])  # a re-delivered query overwrites its row
    store.record_judgements([("q1", "a", 1, 101.0), ("q1", "b", -1, 101.0)])
    store.record_judgements([("q1", "b", 1, 102.0)])  # the latest judgement counts
    store.record_offline("v2", {"held_out_nDCG@10": 0.5})
    store.close()
    store = EvaluationStore(state_databases.open("evaluation store"))
    assert sorted((a.query_id, a.arm) for a in store.answers()) == [("q1", "serving"), ("q1", "shadow"),
                                                                    ("q2", "interleave")]
    assert store.answers(since=150.0)[0].credits == {"a": "serving", "b": "candidate"}
    assert store.judgements(["q1", "q2"]) == {"q1": {"a": 1, "b": 1}}
    assert store.offline() == {"v2": {"held_out_nDCG@10": 0.5}}
    assert store.prune(max_age_s=50.0, now=220.0) == 2 + 2  # two answers and two judgements before 170
    assert [a.query_id for a in store.answers()] == ["q2"]


def test_one_live_experiment_per_model_and_transitions_happen_once(state_databases: StateDatabases) -> None:
    store = EvaluationStore(state_databases.open("evaluation store"))
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


def test_the_latest_judgement_by_feedback_offset_counts_and_a_late_or_repeated_one_changes_nothing(
        state_databases: StateDatabases) -> None:
    store = EvaluationStore(state_databases.open("evaluation store"))
    store.record_judgements([JudgementRecord("q1", "a", 1, 10.0, "feedback", 0, 4),
                             JudgementRecord("q1", "a", -1, 11.0, "feedback", 0, 5)])
    store.record_judgements([JudgementRecord("q1", "a", 1, 12.0, "feedback", 0, 4)])  # settled late elsewhere
    store.record_judgements([JudgementRecord("q1", "a", -1, 13.0, "feedback", 0, 5)])  # re-delivered
    assert store.judgements() == {"q1": {"a": -1}}
    assert store.prune(max_age_s=1.0, now=12.5) == 1  # kept from when it was first judged (11.0)
    store.record_judgements([JudgementRecord("q1", "a", 0, 20.0, "feedback", 0, 9)])
    store.record_judgements([JudgementRecord("q1", "a", 1, 21.0, "feedback", 1, 2)])  # another partition: as it comes
    assert store.judgements() == {"q1": {"a": 1}}


def test_judgements_of_an_older_evaluation_store_are_kept_and_replaced_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.sqlite3"
    with sqlite3.connect(path) as db:  # the judgements table as released before
        db.execute("CREATE TABLE judgements (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, judgement INTEGER NOT "
                   "NULL, judged_at REAL NOT NULL, PRIMARY KEY (query_id, doc_id))")
        db.execute("INSERT INTO judgements VALUES ('q1', 'a', 1, 100.0), ('q1', 'b', 1, 100.0)")
    db.close()
    store = EvaluationStore(path)
    assert store.judgements() == {"q1": {"a": 1, "b": 1}}
    store.record_judgements([JudgementRecord("q1", "a", -1, 101.0, "feedback", 0, 0)])
    assert store.judgements() == {"q1": {"a": -1, "b": 1}}
