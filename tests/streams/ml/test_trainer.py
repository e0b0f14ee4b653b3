"""The trainer's decisions around a training run: skipped, covered, failed (and serving untouched); a retrain
waits for a rollout and trains from the version that serves then; the training child runs at a lower priority."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from schemas import RetrainRequest
from streams.ml.trainer import Rollouts, ServingIndex, Trainer
from streams.settings import Settings
from streams.state.registry import LocalModelRegistry
from streams.state.store import ChunkPoint, DocumentState
from streams.state.training_pairs import TrainingPair, TrainingPairs


@pytest.fixture
def registry(tmp_path: Path) -> LocalModelRegistry:
    files = tmp_path / "export"
    files.mkdir()
    (files / "model.onnx").write_bytes(b"not used here")
    registry = LocalModelRegistry(tmp_path / "models", "m")
    registry.register(files, source=str(tmp_path / "no-such-weights"), facts={"dim": 4, "max_tokens": 8})
    registry.promote("v1")
    return registry


@pytest.fixture
def pairs(tmp_path: Path) -> TrainingPairs:
    store = TrainingPairs(tmp_path / "feedback.sqlite3")
    store.add([TrainingPair(f"q{i}", f"query {i}", f"d{i}", f"text {i}", "positive", "feedback", f"f/0@{i}")
               for i in range(30)])
    return store


def trainer(tmp_path: Path, registry: LocalModelRegistry, pairs: TrainingPairs, rollouts: Rollouts | None = None,
            **settings: object) -> Trainer:
    docs = [DocumentState(f"d{i}", 1, False, "h", 1, f"text {i}") for i in range(30)]
    chunks = [ChunkPoint(f"d{i}", 0, f"text {i}", 1, "h", "v1", np.ones(4, np.float32) / 2) for i in range(30)]
    config = Settings(data_dir=tmp_path / "data", trainer_attempts=1, **settings)  # type: ignore[arg-type]
    return Trainer(config, registry, pairs, lambda: ServingIndex(docs, list(chunks), frozenset({"dense"})),
                   rollouts=rollouts, poll_s=0.01)


def request(at: datetime | None = None) -> RetrainRequest:
    return RetrainRequest(reason="manual", pairs=0, requested_at=at or datetime.now(UTC))


def test_a_failing_run_is_reported_and_leaves_the_registry_alone(tmp_path: Path, registry: LocalModelRegistry,
                                                                 pairs: TrainingPairs) -> None:
    job = trainer(tmp_path, registry, pairs)
    (update,) = asyncio.run(job.handle(request()))
    assert update.status == "failed" and "training failed 1 times" in update.reason  # type: ignore[operator]
    assert update.previous_version == "v1"
    assert [m.version for m in registry.versions()] == ["v1"] and registry.current().version == "v1"  # type: ignore[union-attr]
    assert pairs.trainings()[-1]["status"] == "failed" and job.status.state == "idle"
    assert not list((tmp_path / "data" / "training").iterdir())  # the job directory is cleaned up

    # no pair changed since that run read them: a request is covered by it, whatever the clocks of the hosts say
    assert asyncio.run(job.handle(request(datetime.now(UTC) + timedelta(hours=5)))) == []
    assert len(pairs.trainings()) == 1


def test_too_few_positive_pairs_skip_training(tmp_path: Path, registry: LocalModelRegistry,
                                              pairs: TrainingPairs) -> None:
    job = trainer(tmp_path, registry, pairs, trainer_min_positive_pairs=31)
    assert asyncio.run(job.handle(request())) == []
    (run,) = pairs.trainings()
    assert run["status"] == "skipped" and "30 positive pairs" in run["reason"]
    assert json.dumps(job.status.last)  # shown on /health and the dashboard


class Rollout:
    """A rollout the test runs by hand: copying until `finish`, or failed."""

    def __init__(self) -> None:
        self.running, self.failed, self.serving = False, False, "v1"

    def rollout_running(self) -> bool:
        return self.running

    def rollout_failed(self, version: str) -> bool:
        return self.failed

    def serves(self, version: str) -> bool:
        return self.serving == version


def second_version(registry: LocalModelRegistry, tmp_path: Path) -> str:
    files = tmp_path / "v2-files"
    files.mkdir()
    (files / "model.onnx").write_bytes(b"not used here")
    return registry.register(files, source="none", facts={"dim": 4, "max_tokens": 8}).version


def test_a_retrain_waits_for_a_running_rollout_then_trains_from_the_version_that_serves(
        tmp_path: Path, registry: LocalModelRegistry, pairs: TrainingPairs) -> None:
    rollout = Rollout()
    job = trainer(tmp_path, registry, pairs, rollout)

    async def scenario() -> list[object]:
        rollout.running = True
        retrain = asyncio.create_task(job.handle(request()))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if job.status.state == "waiting":
                break
        assert job.status.state == "waiting" and job.status.waiting_for == "a running rollout"
        assert not (tmp_path / "data" / "training").exists()  # nothing started
        registry.promote(second_version(registry, tmp_path))  # the rollout switches to v2 ...
        rollout.running = False  # ... and ends
        return await asyncio.wait_for(retrain, 60)

    (update,) = asyncio.run(scenario())
    assert update.previous_version == "v2"  # trained (and failed, on this fake model) from the version serving now
    assert job.status.state == "idle" and job.status.waiting_for is None


def test_the_version_a_trainer_promoted_is_waited_for_until_it_serves_or_its_rollout_fails(
        tmp_path: Path, registry: LocalModelRegistry, pairs: TrainingPairs) -> None:
    rollout = Rollout()
    job = trainer(tmp_path, registry, pairs, rollout)
    job.awaiting = second_version(registry, tmp_path)  # as after a run that promoted v2

    async def waits() -> bool:
        try:
            await asyncio.wait_for(job.wait_for_rollouts(), 0.3)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(waits()) and job.status.waiting_for == "the rollout of v2"
    rollout.failed = True  # its rollout failed: v1 keeps serving and the next retrain trains from it
    assert not asyncio.run(waits()) and job.awaiting is None and job.status.state == "idle"

    job.awaiting, rollout.failed = "v2", False
    registry.promote("v2")  # it serves
    assert not asyncio.run(waits()) and job.awaiting is None

    impatient = trainer(tmp_path, registry, pairs, rollout, trainer_rollout_wait_s=0.05)
    rollout.running = True  # stuck: a retrain waits at most trainer_rollout_wait_s, then trains anyway
    asyncio.run(asyncio.wait_for(impatient.wait_for_rollouts(), 5))
    assert impatient.status.state == "idle"


def test_the_training_child_runs_at_a_lower_cpu_priority(tmp_path: Path, registry: LocalModelRegistry,
                                                         pairs: TrainingPairs) -> None:
    job = trainer(tmp_path, registry, pairs, trainer_nice=7)
    probe = [sys.executable, "-c", "import os; print(os.nice(0))"]
    own = int(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
    child = subprocess.run(probe, capture_output=True, text=True, check=True, preexec_fn=job._child_setup)
    assert int(child.stdout) == min(19, own + 7)


def test_a_decision_published_before_a_stop_is_published_again_not_retrained_nor_lost(
        tmp_path: Path, registry: LocalModelRegistry, pairs: TrainingPairs) -> None:
    files = tmp_path / "v2-files"
    files.mkdir()
    (files / "model.onnx").write_bytes(b"not used here")
    registry.register(files, source="none", facts={"dim": 4, "max_tokens": 8}, metrics={"candidate_nDCG@10": 0.5},
                      lineage={"base_version": "v1", "request": "retrain/0@7", "pairs": 30,
                               "decision": {"status": "promoted", "reason": "held-out nDCG@10 +0.1"}})
    job = trainer(tmp_path, registry, pairs)  # the run of retrain/0@7 registered v2, then the worker stopped
    published: list[tuple[list[str], int]] = []

    async def publish(updates: list[object]) -> None:
        published.append(([u.status for u in updates], len(pairs.trainings())))  # type: ignore[attr-defined]

    updates = asyncio.run(job.handle(request(), "retrain/0@7", publish))
    assert [(u.status, u.version) for u in updates] == [("candidate", "v2"), ("promoted", "v2")]
    assert updates[-1].trained_on["request"] == "retrain/0@7" and updates[-1].previous_version == "v1"
    assert published == [(["candidate", "promoted"], 0)]  # published before the run was recorded ...
    assert [t["version"] for t in pairs.trainings()] == ["v2"]  # ... and recorded after, without training again
    assert [m.version for m in registry.versions()] == ["v1", "v2"]


def test_a_trainer_with_an_index_copy_waits_until_the_copy_is_the_serving_versions(
        tmp_path: Path, registry: LocalModelRegistry, pairs: TrainingPairs) -> None:
    rollout = Rollout()
    job = trainer(tmp_path, registry, pairs, rollout, agents="trainer")  # trainer-only, embedded store
    registry.promote(second_version(registry, tmp_path))  # a worker switched; this process's copy is still v1

    async def waits() -> bool:
        try:
            await asyncio.wait_for(job.wait_for_rollouts(), 0.3)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(waits()) and job.status.waiting_for == "this process's index copy to reach v2"
    rollout.serving = "v2"  # the copy was re-embedded
    assert not asyncio.run(waits()) and job.status.state == "idle"
    rollout.serving, rollout.failed = "v1", True  # or its re-embedding failed: nothing to wait for
    assert not asyncio.run(waits())
    assert not trainer(tmp_path, registry, pairs, rollout).settings.keeps_index_copy  # a worker that ingests
