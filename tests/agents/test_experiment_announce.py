"""An experiment decision taken just before a stop (recorded, not yet on `model-updates`) is published on the next
check by any worker, and once only after it is marked published; the rollout agent knows it by its key."""

from __future__ import annotations

from pathlib import Path

from agents.rollout import decision_key
from schemas import ModelUpdate
from streams.devtools.harness import Harness, double_registry
from streams.state.evaluation_store import ExperimentRecord


def test_a_decision_recorded_but_not_published_is_published_on_the_next_check(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    with Harness(tmp_path, registry=registry).register("experiment") as harness:
        store = harness.shared.evaluation
        store.start_experiment(ExperimentRecord("v2-split-1", "minilm", "v2", "v1", "split", 0.5, "running", 1.0))
        assert store.transition("v2-split-1", ("running",), "promoted", decision="promote", reason="better",
                                ended=True, announce=True)  # the worker that decided stopped here
        assert [e.id for e in store.unannounced("minilm")] == ["v2-split-1"]
        harness.tick()  # any worker's next check
        (update,) = [u for u in harness.published("model-updates") if isinstance(u, ModelUpdate)]
        assert (update.status, update.version, update.previous_version) == ("promoted", "v2", "v1")
        assert decision_key(update) == "experiment:v2-split-1:promoted"
        assert store.unannounced("minilm") == []
        harness.tick()
        assert len(harness.published("model-updates")) == 1  # published once
