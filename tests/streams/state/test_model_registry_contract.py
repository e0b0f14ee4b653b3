"""The `ModelRegistry` contract, run against every backend (the local filesystem registry)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.state.errors import NothingToRollBack, UnknownModelVersion
from streams.state.registry import LocalModelRegistry, ModelRegistry

BACKENDS: dict[str, Callable[[Path], ModelRegistry]] = {"local": lambda root: LocalModelRegistry(root, "m")}


@pytest.fixture(params=sorted(BACKENDS))
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    return BACKENDS[request.param](tmp_path / "registry")


def export(tmp_path: Path, name: str) -> Path:
    files = tmp_path / name
    files.mkdir()
    (files / "model.onnx").write_bytes(b"onnx " + name.encode())
    (files / "tokenizer.json").write_text("{}")
    return files


def test_versions_register_in_order_with_metrics_and_lineage(registry: ModelRegistry, tmp_path: Path) -> None:
    assert registry.current() is None and registry.versions() == []
    first = registry.register(export(tmp_path, "a"), source="/weights/a", facts={"dim": 8, "max_tokens": 16})
    second = registry.register(export(tmp_path, "b"), source="/weights/b", facts={"dim": 8, "max_tokens": 16},
                               metrics={"nDCG@10": 0.5}, lineage={"base_version": first.version})
    assert [m.version for m in registry.versions()] == [first.version, second.version] == ["v1", "v2"]
    stored = registry.get("v2")
    assert stored.metrics == {"nDCG@10": 0.5} and stored.lineage == {"base_version": "v1"}
    assert stored.onnx_path.read_bytes() == b"onnx b" and stored.source == "/weights/b"
    assert json.loads((stored.path / "manifest.json").read_text())["dim"] == 8
    with pytest.raises(UnknownModelVersion):
        registry.get("v9")
    with pytest.raises(FileExistsError):
        registry.register(export(tmp_path, "c"), source="/c", facts={"dim": 8, "max_tokens": 16}, version="v1")


def test_promotion_history_and_rollback_target(registry: ModelRegistry, tmp_path: Path) -> None:
    for name in "abc":
        registry.register(export(tmp_path, name), source=name, facts={"dim": 8, "max_tokens": 16})
    registry.promote("v1")
    assert registry.current().version == "v1"  # type: ignore[union-attr]
    with pytest.raises(NothingToRollBack):
        registry.previous()
    registry.promote("v3")
    assert registry.current().version == "v3" and registry.previous() == "v1"  # type: ignore[union-attr]
    registry.promote("v1")  # a rollback is a promotion of the previous version
    assert registry.previous() == "v3"
    assert [v for v, _ in registry.history()] == ["v1", "v3", "v1"]
    with pytest.raises(UnknownModelVersion):
        registry.promote("v7")


def test_only_version_names_are_versions_so_no_name_leaves_the_registry(registry: ModelRegistry,
                                                                        tmp_path: Path) -> None:
    registry.register(export(tmp_path, "a"), source="a", facts={"dim": 8, "max_tokens": 16})
    for name in ("../../../../tmp", "v1/../..", "/etc", "v", "latest", ""):
        with pytest.raises(UnknownModelVersion):
            registry.get(name)
        with pytest.raises(UnknownModelVersion):
            registry.promote(name)
