"""Experiments always end: one whose candidate starts serving by another path (an operator's promotion, a reindex)
or whose baseline stops serving ends with its reason, on the next check after a restart too; one of the serving
version or of the version being rolled out is refused; two starts never share an id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas import ModelUpdate
from streams import metrics
from streams.devtools.harness import Harness, double_registry, message
from streams.ml.experiments import end_update, start_update
from streams.ml.serving import RolloutProgress
from streams.ml.trainer import promote_update, reindex_update
from streams.settings import Settings
from streams.state.errors import ExperimentConflict
from streams.state.evaluation_store import EvaluationStore, ExperimentRecord
from streams.web.http import build_http_app

AGENTS = ("ingest", "query", "rollout", "experiment")
DOCS = [{"doc_id": f"d{i}", "version": 1, "op": "upsert", "text": f"note {i} about tea and bikes"} for i in range(6)]


def running_gauge() -> float:
    """`gristmill_experiment_running`, summed over its modes."""
    return sum(sample.value for family in metrics.EXPERIMENT_RUNNING.collect() for sample in family.samples)


OFFSETS: dict[int, int] = {}  # per harness: the next offset of `model-updates`


def deliver(harness: Harness, *updates: ModelUpdate) -> None:
    """Updates to the rollout agent, keyed by the model and after those delivered before, as Kafka would."""
    offset = OFFSETS.get(id(harness), 0)
    harness.send("model-updates", [message("model-updates", u, "minilm", offset=offset + i)
                                   for i, u in enumerate(updates)])
    OFFSETS[id(harness)] = offset + len(updates)


def test_promoting_the_candidate_of_a_running_interleave_ends_it_with_its_reason(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2", "v3"))
    with Harness(tmp_path, registry=registry).register(*AGENTS) as harness:
        store = harness.shared.evaluation
        harness.send("documents", DOCS)
        deliver(harness, start_update(registry, store, "v2", "interleave", 1.0))
        harness.tick()  # builds the challenger, runs
        harness.tick()
        assert store.active("minilm").state == "running" and running_gauge() == 1  # type: ignore[union-attr]
        deliver(harness, promote_update(registry, "v2", "promoted by an operator"))  # POST /admin/promote
        assert harness.shared.serving.current.model.version == "v2"
        (ended, *_) = store.experiments("minilm")
        assert (ended.state, ended.decision) == ("ended", "end") and ended.ended_at is not None
        assert "v2 serves now" in (ended.reason or "") and "promoted by an operator" in (ended.reason or "")
        assert store.active("minilm") is None
        harness.tick()
        assert running_gauge() == 0 and harness.shared.serving.challenger is None
        harness.send("queries", [{"query_id": "q1", "text": "tea", "top_k": 3}])
        (response,) = harness.published("responses")
        assert (response.arm, response.experiment) == ("serving", None)  # type: ignore[attr-defined]
        deliver(harness, start_update(registry, store, "v3", "shadow", 0.5))  # no 409: the next one starts
        assert store.active("minilm").version == "v3"  # type: ignore[union-attr]


def test_experiments_stuck_before_the_fix_are_ended_by_the_first_check_after_a_restart(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2", "v3"))
    registry.promote("v2")
    cases = {"v2 vs v2": ("v2", "v2", "v2 serves now"),  # an experiment of the version a reindex rolled out
             "v2 vs v1": ("v2", "v1", "v2 serves now"),  # its candidate promoted outside it
             "v3 vs v1": ("v3", "v1", "its baseline v1 no longer serves (v2 does)")}
    stuck = EvaluationStore(Settings(data_dir=tmp_path).evaluation_path)  # left running by an older release
    stuck.start_experiment(ExperimentRecord("e0", "minilm", "v2", "v2", "interleave", 0.5, "running", 1.0))
    stuck.close()
    with Harness(tmp_path, registry=registry).register(*AGENTS) as harness:  # the worker restarts
        store = harness.shared.evaluation
        for i, (name, (version, baseline, why)) in enumerate(cases.items()):
            if i:
                store.start_experiment(ExperimentRecord(f"e{i}", "minilm", version, baseline, "interleave", 0.5,
                                                        "running", 1.0 + i))
            harness.tick()  # the next check, of any worker
            (ended, *_) = store.experiments("minilm")
            assert (ended.id, ended.state, ended.decision) == (f"e{i}", "ended", "end"), name
            assert why in (ended.reason or ""), (name, ended.reason)
            assert running_gauge() == 0 and store.active("minilm") is None
        harness.tick()
        assert [e.state for e in store.experiments("minilm")] == ["ended"] * 3  # once each, and nothing else


def test_an_experiment_asked_while_a_reindex_rolls_its_version_out_is_recorded_as_refused(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1",))
    with Harness(tmp_path, registry=registry).register(*AGENTS) as harness:
        store = harness.shared.evaluation
        harness.send("documents", DOCS)
        reindex = reindex_update(registry, tmp_path)  # registers v2, the serving model again, and promotes it
        late = start_update(registry, store, "v2", "interleave", 0.5)  # asked where no rollout is seen yet
        deliver(harness, reindex, late)
        assert harness.shared.serving.current.model.version == "v2"
        (recorded, *_) = store.experiments("minilm")
        assert (recorded.id, recorded.state, recorded.decision) == (late.experiment.id, "ended", "end")  # type: ignore[union-attr]
        assert recorded.reason == "refused: v2 serves already"
        deliver(harness, late)  # re-delivered: changes nothing
        harness.tick()
        harness.tick()
        assert store.active("minilm") is None and running_gauge() == 0
        assert harness.shared.serving.challenger is None
        assert [e.state for e in store.experiments("minilm")] == ["ended"]


def test_starting_an_experiment_of_the_serving_or_the_rolling_version_is_a_typed_conflict(tmp_path: Path) -> None:
    from streams.state.errors import CandidateServes  # (new: imported here, so the other tests run without it)

    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    store = EvaluationStore(tmp_path / "evaluation.sqlite3")
    try:
        with pytest.raises(CandidateServes) as serving:
            start_update(registry, store, "v1", "split", 0.5)
        with pytest.raises(CandidateServes) as rolling:  # this worker is copying v2's collection
            start_update(registry, store, "v2", "split", 0.5, rolling="v2")
        assert isinstance(rolling.value, ExperimentConflict)  # a 409 wherever a conflict is
        assert (serving.value.version, serving.value.why) == ("v1", "serves already")
        assert (rolling.value.version, rolling.value.why) == ("v2", "is being rolled out to serve")
        assert start_update(registry, store, "v2", "split", 0.5, rolling="v3").version == "v2"
    finally:
        store.close()


def test_an_http_start_of_the_version_being_rolled_out_is_a_409_with_the_reason(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    with Harness(tmp_path, registry=registry, admin_token="s3cret").register(*AGENTS) as harness:
        harness.shared.serving.rollout = RolloutProgress("v2", "v1")  # copying v2's collection now

        async def main() -> list[tuple[int, Any]]:
            async with TestClient(TestServer(build_http_app(harness))) as client:
                answers = []
                for version in ("v2", "v1"):
                    response = await client.post("/admin/experiment", json={"version": version},
                                                 headers={"Authorization": "Bearer s3cret"})
                    answers.append((response.status, await response.json()))
                return answers

        (rolling, serving) = harness.run(main())
        assert rolling[0] == 409 and "v2 is being rolled out to serve" in str(rolling[1])
        assert serving[0] == 409 and "v1 serves already" in str(serving[1])
        assert harness.published("model-updates") == []


def test_stopping_and_starting_within_a_second_starts_a_new_experiment(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    with Harness(tmp_path, registry=registry).register(*AGENTS) as harness:
        store = harness.shared.evaluation
        first = start_update(registry, store, "v2", "split", 0.5, now=1_700_000_000.0)
        deliver(harness, first)
        deliver(harness, end_update(store, "minilm", "stop", "stop by an operator"))
        second = start_update(registry, store, "v2", "split", 0.5, now=1_700_000_000.4)
        assert first.experiment is not None and second.experiment is not None
        assert second.experiment.id != first.experiment.id
        assert second.experiment.id.startswith("v2-split-1700000000-")  # still readable
        ids = {start_update(registry, store, "v2", "split", 0.5, now=1_700_000_000.0).experiment.id  # type: ignore[union-attr]
               for _ in range(50)}
        assert len(ids) == 50
        deliver(harness, second)
        assert store.active("minilm").id == second.experiment.id  # type: ignore[union-attr]
        assert [e.state for e in store.experiments("minilm")] == ["building", "stopped"]
