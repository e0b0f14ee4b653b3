"""`gristmill retrain`, `rollback`, `promote` and `models`: the model lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from schemas import ModelUpdate
from streams.cli.context import console, fail, load_settings, require_kafka, untrusted

if TYPE_CHECKING:
    from streams.state.registry import ModelRegistry


def retrain(reason: Annotated[str, typer.Option(help="Recorded reason.")] = "manual") -> None:
    """Ask the trainer for a new model version now (a `retrain` event, reason manual)."""
    from datetime import UTC, datetime

    from schemas import RetrainRequest
    from streams.produce import produce_record

    settings = require_kafka(load_settings())
    try:
        request = RetrainRequest(reason=reason, pairs=0, requested_at=datetime.now(UTC))  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail("invalid retrain request: ", exc, status=2) from exc
    produce_record(settings, "retrain", settings.model_name, request)
    console.print(untrusted(f"retrain requested ({reason}) for model {settings.model_name}"))


def _request_update(build: Callable[[ModelRegistry], ModelUpdate]) -> ModelUpdate:
    """Build a model update from the registry and send it to `model-updates`; a refusal is one line, exit 1."""
    from streams.ml.serving import open_registry
    from streams.produce import produce_record
    from streams.state.errors import NothingToRollBack, UnknownModelVersion

    settings = require_kafka(load_settings())
    try:
        update = build(open_registry(settings))
    except (NothingToRollBack, UnknownModelVersion) as exc:
        raise fail("refused: ", exc) from exc
    produce_record(settings, "model-updates", settings.model_name, update)
    return update


def rollback() -> None:
    """Serve the model (and its collection) that served before the current one, in one step."""
    from streams.ml.trainer import rollback_update

    update = _request_update(rollback_update)
    console.print(untrusted(f"rollback requested: {update.previous_version} -> {update.version} "
                            "(`gristmill status` shows the switch)"))


def promote(version: str) -> None:
    """Roll out a registered version (e.g. a rejected candidate) regardless of its evaluation."""
    from streams.ml.trainer import promote_update

    _request_update(lambda registry: promote_update(registry, version, "promoted by an operator"))
    console.print(untrusted(f"promotion of {version} requested"))


def reindex() -> None:
    """Rebuild the serving index into a new collection with dense and BM25 sparse vectors (a rollout of the serving
    model registered again as the next version); searches go on against the current index meanwhile."""
    from streams.ml.trainer import reindex_update

    update = _request_update(lambda registry: reindex_update(registry, registry.root))
    console.print(untrusted(f"reindex requested: {update.previous_version} -> {update.version} (the same model; "
                            "`gristmill status` shows the rollout)"))


def models() -> None:
    """Registered model versions with their evaluation and lineage."""
    from streams.ml.serving import open_registry

    settings = load_settings()
    registry = open_registry(settings)
    current = registry.current()
    table = Table("version", "serving", "created", "base", "pairs", "nDCG@10 serving -> candidate", "MRR@10")
    for model in registry.versions():
        m = model.metrics
        ndcg = (f"{m['current_nDCG@10']:.4f} -> {m['candidate_nDCG@10']:.4f}" if "candidate_nDCG@10" in m else "")
        mrr = f"{m['current_MRR@10']:.4f} -> {m['candidate_MRR@10']:.4f}" if "candidate_MRR@10" in m else ""
        table.add_row(*(untrusted(cell) for cell in (
            model.version, "*" if current and current.version == model.version else "", model.created_at[:19],
            model.lineage.get("base_version", model.lineage.get("base", "")), model.lineage.get("pairs", ""), ndcg,
            mrr)))
    console.print(table)
