"""The rollout agent in process: a promotion re-embeds the index into the version's collection and switches the
serving pair; outdated and foreign records change nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from schemas import ModelUpdate
from streams.devtools.harness import Harness, double_registry, message


def update(version: str, status: str = "promoted") -> ModelUpdate:
    return ModelUpdate(version=version, uri="", status=status, at=datetime.now(UTC))  # type: ignore[arg-type]


def test_a_promotion_is_rolled_out_and_switches_serving(tmp_path: Path) -> None:
    registry = double_registry(tmp_path / "models", versions=("v1", "v2"))
    with Harness(tmp_path, registry=registry, rollout_step_documents=2).register("ingest", "rollout") as harness:
        harness.send("documents", [{"doc_id": f"d{i}", "version": 1, "op": "upsert", "text": f"note {i}"}
                                   for i in range(5)])
        harness.send("model-updates", [message("model-updates", update("v2"), "other-model")])  # not ours
        assert harness.shared.serving.current.model.version == "v1"
        harness.send("model-updates", [message("model-updates", update("v2"), "minilm")])
        serving = harness.shared.serving
        assert serving.current.model.version == "v2" and registry.current().version == "v2"  # type: ignore[union-attr]
        assert serving.current.store.count_documents() == 5 and serving.rollout.state == "switched"  # type: ignore[union-attr]
        assert serving.current.searcher.search("note 3", 1).hits[0].doc_id == "d3"


def test_a_rollout_that_cannot_happen_ends_failed_with_its_reason_and_serving_stays(tmp_path: Path) -> None:
    with Harness(tmp_path).register("ingest", "rollout") as harness:
        harness.send("model-updates", [message("model-updates", update("v7"), "minilm"),  # never registered
                                       message("model-updates", b'{"version": "../../../../tmp", "uri": "", '
                                                                b'"status": "rolled_back"}', "minilm", offset=1)])
        serving = harness.shared.serving
        assert serving.current.model.version == "v1"
        assert serving.rollout is not None and serving.rollout.state == "failed"
        assert "UnknownModelVersion" in (serving.rollout.error or "")
        (letter,) = harness.published("deadletter")
        assert letter.errors[0].loc == "version"  # type: ignore[attr-defined]
        harness.tick()  # following the registry does not retry a failed rollout in a loop
        assert serving.current.model.version == "v1"
