"""Shared fixtures: the exported ONNX model (once per cache), the encoder, and an embedded Tansu broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streams.broker import EmbeddedBroker
from streams.state.encoder import OnnxEncoder
from streams.state.registry import LocalModelRegistry, ModelVersion, ensure_base_model

MODEL_NAME = "minilm"


@pytest.fixture(scope="session")
def registry_dir(request: pytest.FixtureRequest) -> Path:
    """A model registry holding the exported base model; kept in pytest's cache between runs."""
    root = Path(request.config.cache.mkdir("gristmill-models"))
    ensure_base_model(LocalModelRegistry(root, MODEL_NAME))
    return root


@pytest.fixture(scope="session")
def base_model(registry_dir: Path) -> ModelVersion:
    current = LocalModelRegistry(registry_dir, MODEL_NAME).current()
    assert current is not None
    return current


@pytest.fixture(scope="session")
def encoder(base_model: ModelVersion) -> OnnxEncoder:
    return OnnxEncoder(base_model, threads=2)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running
