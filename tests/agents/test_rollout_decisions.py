"""One decision per model change: the rollout agent applies promotions and rollbacks in the order of the
`model-updates` log, moving the registry pointer by compare-and-set; a replayed or overtaken decision is refused
visibly (never by comparing clocks); a follower never moves the pointer back; a registry that cannot be written
never closes the pair that serves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agents.experiment import follow as follow_experiment
from agents.rollout import follow_registry
from schemas import ModelUpdate
from streams.answering import ActiveExperiment
from streams.devtools.harness import Harness, double_pairs, double_registry, message
from streams.ml.rollout import build_challenger, roll_out
from streams.ml.serving import Serving, ServingSlot
from streams.ml.trainer import promote_update
from streams.settings import Settings
from streams.state.errors import PointerMoved, RegistryWriteFailed, UnknownModelVersion
from streams.state.evaluation_store import EvaluationStore
from streams.state.registry import LocalModelRegistry, LogPosition
from streams.store_threads import StoreThreads


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


def test_a_candidate_promoted_as_its_experiment_ends_keeps_the_collection_it_serves_from(tmp_path: Path) -> None:
    """Seen in the production rehearsal: a promotion of the experiment's candidate opens its serving pair on the
    challenger's collection; the experiment's end, seen meanwhile, retired the challenger, and its retirement closed
    the collection the new pair served from (every search then failed)."""
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    closed: list[object] = []

    async def scenario() -> ServingSlot:
        slot = ServingSlot(registry, registry.get("v1"), double_pairs(Settings(data_dir=tmp_path)),
                           retire_after_s=0.01, closer=lambda pair: closed.append(pair.store))
        slot.attach_challenger(slot.open_challenger(registry.get("v2"), "shadow"))
        target = slot.open(registry.get("v2"))  # the promotion begins on the challenger's collection ...
        released = slot.detach_challenger()  # ... the experiment's end is seen meanwhile ...
        assert released is not None
        slot.retire_later(released)
        slot.retire_later(slot.switch(target))  # ... and the promotion switches
        await asyncio.sleep(0.1)  # every retirement is due
        return slot

    slot = asyncio.run(scenario())
    assert slot.current.model.version == "v2" and slot.current.store not in closed
    assert len(closed) == 1  # v1's pair, retired by the switch


def test_an_experiment_that_ends_during_a_rollout_keeps_its_challenger_until_the_rollout_ends(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    slot = ServingSlot(registry, registry.get("v1"), double_pairs(Settings(data_dir=tmp_path)))
    challenger = slot.open_challenger(registry.get("v2"), "shadow")
    slot.attach_challenger(challenger)
    evaluation = EvaluationStore(tmp_path / "evaluation.sqlite3")  # no live experiment: the challenger must go

    async def tick(rolling: bool) -> Serving | None:
        threads = StoreThreads(1.0)
        try:
            if rolling:
                async with slot.rolling:
                    await follow_experiment(serving=slot, active=ActiveExperiment(evaluation, "minilm"),
                                            write=threads.write, step_documents=4)
            else:
                await follow_experiment(serving=slot, active=ActiveExperiment(evaluation, "minilm"),
                                        write=threads.write, step_documents=4)
        finally:
            threads.close()
        return slot.challenger

    try:
        assert asyncio.run(tick(rolling=True)) is challenger  # a rollout may be making it serve: kept
        assert asyncio.run(tick(rolling=False)) is None  # no rollout: let go
    finally:
        evaluation.close()


def test_two_operator_promotions_sent_back_to_back_end_on_the_second(tmp_path: Path) -> None:
    """An operator's promotion names a target: built while v1 still served, both apply in the log's order."""
    registry = double_registry(tmp_path / "models", versions=("v1", "v2", "v3"))
    first, second = promote_update(registry, "v2", "ops"), promote_update(registry, "v3", "ops")
    assert first.previous_version is None and "v1 served when it was asked" in (first.reason or "")
    with Harness(tmp_path, registry=registry).register("ingest", "rollout") as harness:
        harness.send("model-updates", [message("model-updates", first, "minilm", offset=1),
                                       message("model-updates", second, "minilm", offset=2)])
        assert harness.shared.serving.current.model.version == "v3" == registry.current().version  # type: ignore[union-attr]
        assert not harness.shared.serving.refused


def test_a_challenger_build_that_fails_is_not_reported_as_a_failed_rollout(tmp_path: Path) -> None:
    """/health's `rollout` is about what serves: a failed experiment build shows as `challenger_build`, and the
    registry is still followed to that version afterwards."""
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    slot = ServingSlot(registry, registry.get("v1"), double_pairs(Settings(data_dir=tmp_path)))

    async def build() -> None:
        threads = StoreThreads(1.0)
        try:
            with pytest.raises(UnknownModelVersion):
                await build_challenger(slot, "v9", threads.write, step_documents=4)
        finally:
            threads.close()

    asyncio.run(build())
    assert slot.rollout is None and not slot.rollout_failed("v9")
    assert slot.challenger_build is not None and slot.challenger_build.state == "failed"
