"""The trainer's decisions around a training run: skipped, covered, failed (and serving untouched)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import RetrainRequest
from streams.ml.trainer import Trainer
from streams.settings import Settings
from streams.state.registry import LocalModelRegistry
from streams.state.store import DocumentState
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


def trainer(tmp_path: Path, registry: LocalModelRegistry, pairs: TrainingPairs, **settings: object) -> Trainer:
    docs = [DocumentState(f"d{i}", 1, False, "h", 1, f"text {i}") for i in range(30)]
    config = Settings(data_dir=tmp_path / "data", trainer_attempts=1, **settings)  # type: ignore[arg-type]
    return Trainer(config, registry, pairs, lambda: docs)


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

    # a request made before that run read its pairs is covered by it; a later one is not
    assert asyncio.run(job.handle(request(datetime.now(UTC) - timedelta(minutes=5)))) == []


def test_too_few_positive_pairs_skip_training(tmp_path: Path, registry: LocalModelRegistry,
                                              pairs: TrainingPairs) -> None:
    job = trainer(tmp_path, registry, pairs, trainer_min_positive_pairs=31)
    assert asyncio.run(job.handle(request())) == []
    (run,) = pairs.trainings()
    assert run["status"] == "skipped" and "30 positive pairs" in run["reason"]
    assert json.dumps(job.status.last)  # shown on /health and the dashboard
