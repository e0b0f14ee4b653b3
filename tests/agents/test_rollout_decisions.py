"""One decision per model change: the rollout agent applies promotions and rollbacks in the order of the
`model-updates` log, moving the registry pointer by compare-and-set; a replayed or overtaken decision is refused
visibly (never by comparing clocks); a follower never moves the pointer back; a registry that cannot be written
never closes the pair that serves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agents.rollout import follow_registry
from schemas import ModelUpdate
from streams.devtools.harness import Harness, double_registry, message
from streams.ml.rollout import roll_out
from streams.state.errors import PointerMoved, RegistryWriteFailed
from streams.state.registry import LocalModelRegistry, LogPosition


def decision(version: str, previous: str | None, status: str = "promoted", at: datetime | None = None
             ) -> ModelUpdate:
    return ModelUpdate(version=version, uri="", status=status, previous_version=previous,  # type: ignore[arg-type]
                       at=at or datetime.now(UTC))


def test_decisions_apply_in_log_order_and_stale_ones_are_refused_visibly(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2", "v3"))
    with Harness(tmp_path, registry=registry).register("ingest", "rollout") as harness:
        serving = harness.shared.serving
        harness.send("documents", [{"doc_id": f"d{i}", "version": 1, "op": "upsert", "text": f"note {i}"}
                                   for i in range(3)])

        def send(update: ModelUpdate, offset: int) -> None:
            harness.send("model-updates", [message("model-updates", update, "minilm", offset=offset)])

        send(decision("v3", "v1"), 5)  # an operator's promotion
        assert serving.current.model.version == "v3" == registry.current().version  # type: ignore[union-attr]
        send(decision("v1", "v3", "rolled_back"), 6)  # then a rollback
        assert serving.current.model.version == "v1" == registry.current().version  # type: ignore[union-attr]
        send(decision("v3", "v1"), 5)  # the promotion delivered again (a restart before its commit)
        assert registry.current().version == "v1" and serving.current.model.version == "v1"  # type: ignore[union-attr]
        assert "already decided" in serving.refused[0]["reason"]  # type: ignore[operator]
        send(decision("v2", "v3"), 7)  # a trainer's decision made while v3 served: overtaken by the rollback
        assert registry.current().version == "v1"  # type: ignore[union-attr]
        assert serving.refused[0]["reason"] == "decided against v3, but v1 serves now"
        # a decision stamped by a host whose clock is a day behind is applied all the same: the log orders it
        send(decision("v2", "v1", at=datetime.now(UTC) - timedelta(days=1)), 8)
        assert serving.current.model.version == "v2" == registry.current().version  # type: ignore[union-attr]
        pointer = registry.pointer()
        assert pointer is not None and str(pointer.position) == "0@8"
        # a worker that lost the partition and finishes an older decision late is refused inside the registry's lock
        with pytest.raises(PointerMoved):
            registry.promote("v3", expected="v2", position=LogPosition(0, 5))
        assert registry.current().version == "v2"  # type: ignore[union-attr]
        assert harness.published("deadletter") == []


class ReadOnlyRegistry(LocalModelRegistry):
    """A registry whose volume refuses writes from now on (read-only or full)."""

    def promote(self, version: str, **kwargs: Any) -> None:
        raise RegistryWriteFailed(f"cannot write the pointer of {version}: read-only file system")


def test_a_registry_that_cannot_be_written_never_closes_the_pair_that_serves(tmp_path: Path) -> None:
    double_registry(tmp_path / "models", versions=("v1", "v2"))
    registry = ReadOnlyRegistry(tmp_path / "models", "minilm")
    with Harness(tmp_path, registry=registry).register("ingest", "rollout") as harness:
        harness.send("documents", [{"doc_id": "d1", "version": 1, "op": "upsert", "text": "green tea"}])
        harness.send("model-updates", [message("model-updates", decision("v2", "v1"), "minilm")])
        serving = harness.shared.serving
        assert serving.current.model.version == "v1" and serving.rollout.state == "failed"  # type: ignore[union-attr]
        assert "RegistryWriteFailed" in (serving.rollout.error or "")  # type: ignore[union-attr]
        assert serving.current.searcher.search("green tea", 1).hits[0].doc_id == "d1"  # still open, still serving
        harness.send("documents", [{"doc_id": "d2", "version": 1, "op": "upsert", "text": "black coffee"}])
        assert serving.current.store.count_documents() == 2


def test_a_slow_follower_never_moves_the_pointer_back(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2", "v3"))
    with Harness(tmp_path, registry=registry).register("ingest") as harness:
        serving = harness.shared.serving
        harness.send("documents", [{"doc_id": f"d{i}", "version": 1, "op": "upsert", "text": f"note {i}"}
                                   for i in range(5)])
        registry.promote("v3")  # another worker applied "promote v3": this one follows

        async def write_while_the_operator_rolls_back(operation: Any, what: str) -> Any:
            if what.startswith("rollout copy"):
                registry.promote("v1")  # ... and the operator's rollback lands while this worker copies
            return await harness.shared.threads.write(operation, what)

        roll = partial(roll_out, serving, write=write_while_the_operator_rolls_back, step_documents=2)
        harness.run(follow_registry(serving=serving, roll=roll))
        assert registry.current().version == "v1"  # type: ignore[union-attr]
        assert serving.current.model.version == "v1" and serving.rollout.state == "abandoned"  # type: ignore[union-attr]
        with pytest.raises(PointerMoved):
            registry.promote("v2", expected="v3")  # compare-and-set: v3 no longer serves
        assert registry.current().version == "v1"  # type: ignore[union-attr]
