"""Batch-level data quality: Great Expectations suites from `schemas/suites/*.json`, one ephemeral context.

GX costs milliseconds per expectation, so it runs per window of records, never per record. The GX import
is deferred to the first `QualityGate` (the `[quality]` extra).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from schemas import DocumentEvent, FeedbackEvent, QueryEvent, Record
from schemas.errors import GristmillError

SUITES_DIR = Path(str(resources.files("schemas") / "suites"))
log = logging.getLogger(__name__)


def document_row(record: DocumentEvent) -> dict[str, Any]:
    text_length = len(record.text) if record.op == "upsert" and record.text else None
    return {"doc_id": record.doc_id, "op": record.op, "is_delete": int(record.op == "delete"),
            "version": record.version, "text_length": text_length, "has_title": record.title is not None,
            "source": record.source, "metadata_keys": len(record.metadata)}


def query_row(record: QueryEvent) -> dict[str, Any]:
    return {"query_id": record.query_id, "text_length": len(record.text), "word_count": len(record.text.split()),
            "top_k": record.top_k, "has_filter": bool(record.filter), "has_user": record.user_id is not None}


def feedback_row(record: FeedbackEvent) -> dict[str, Any]:
    value = record.judgement
    return {"query_id": record.query_id, "doc_id": record.doc_id, "judgement": value, "positive": int(value == 1),
            "from_rating": record.rating is not None}


def window_row(topic: str, record: Record) -> dict[str, Any]:
    """The features of one record that the topic's suite looks at."""
    if isinstance(record, DocumentEvent):
        return document_row(record)
    if isinstance(record, QueryEvent):
        return query_row(record)
    if isinstance(record, FeedbackEvent):
        return feedback_row(record)
    raise TypeError(f"no quality features for {type(record).__name__} on {topic}")


@dataclass(frozen=True)
class FailedCheck:
    expectation: str
    column: str | None
    observed: Any


@dataclass(frozen=True)
class QualityOutcome:
    suite: str
    success: bool
    failed: list[FailedCheck] = field(default_factory=list)
    evaluated: int = 0
    seconds: float = 0.0
    skipped: str | None = None  # why the suite did not run (e.g. an empty window)


def _scalar(value: Any) -> Any:
    """A scalar as a quality record holds it: numbers, text, booleans, None; anything nested as (short) JSON text."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy scalar: the number it holds
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return json.dumps(value, default=str)[:500]


def _jsonable(value: Any) -> Any:
    """What GX observed, in the shape `FailedExpectation.observed` takes: a scalar, a list of scalars or a mapping to
    scalars (deeper levels become JSON text)."""
    if isinstance(value, Mapping):
        return {str(k): _scalar(v) for k, v in list(value.items())[:20]}
    if isinstance(value, (list, tuple, set)):
        return [_scalar(v) for v in list(value)[:20]]
    return _scalar(value)


class InvalidSuite(GristmillError, ValueError):
    """A suite of `GRISTMILL_QUALITY_SUITES_DIR` that cannot be used: not JSON, no name or expectations, an
    expectation GX does not know, or a name that is no topic or source."""


def suite_specs(suites_dir: Path, own_dir: Path | None = None,
                names: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """The suites by name: the defaults, each replaced by one of `own_dir` with its name; `own_dir` may add
    suites whose names are in `names` (a configured source's `source:NAME`)."""
    specs: dict[str, dict[str, Any]] = {}
    for folder, own in ((suites_dir, False), *(((own_dir, True),) if own_dir is not None else ())):
        if own and not folder.is_dir():
            raise InvalidSuite(f"GRISTMILL_QUALITY_SUITES_DIR {folder} is not a directory")
        for path in sorted(folder.glob("*.json")):
            try:
                spec = json.loads(path.read_text(encoding="utf-8"))
                name, expectations = spec["name"], spec["expectations"]
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
                raise InvalidSuite(f"{path}: not a suite ({{\"name\": ..., \"expectations\": [...]}}): "
                                   f"{type(exc).__name__}: {exc}") from None
            if not isinstance(name, str) or not isinstance(expectations, list):
                raise InvalidSuite(f"{path}: `name` must be a string and `expectations` a list")
            if own and names is not None and name not in names and name not in specs:
                raise InvalidSuite(f"{path}: suite {name!r} names no topic and no configured source (known: "
                                   f"{', '.join(sorted({*specs, *names}))})")
            specs[name] = {**spec, "origin": str(path)}
    return specs


class QualityGate:
    """Loads every suite once into an ephemeral GX context and validates windows (pandas) against them: the
    defaults of `schemas/suites`, each replaced by the suite of the same name in `own_dir`, which may add a suite
    per source (`source:NAME`; a source without one is checked with `documents`)."""

    def __init__(self, suites_dir: Path = SUITES_DIR, min_records: int = 2, own_dir: Path | None = None,
                 names: Collection[str] | None = None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.min_records = min_records
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = self._context.data_sources.add_pandas("gristmill-windows")
        self._suites: dict[str, Any] = {}
        self._batches: dict[str, Any] = {}
        from great_expectations.expectations.registry import get_expectation_impl

        for name, spec in suite_specs(suites_dir, own_dir, names).items():
            try:
                for expectation in spec["expectations"]:  # each one GX knows, with arguments it takes
                    get_expectation_impl(expectation["type"])(**expectation.get("kwargs", {}))
                suite = self._context.suites.add(gx.ExpectationSuite(
                    name=name, expectations=spec["expectations"], meta=spec.get("meta", {})))
            except Exception as exc:  # GX's own errors for an expectation it does not know or cannot build
                raise InvalidSuite(f"{spec['origin']}: {type(exc).__name__}: {str(exc)[:300]}") from None
            self._suites[name] = suite
            asset = source.add_dataframe_asset(name=name)
            self._batches[name] = asset.add_batch_definition_whole_dataframe(f"{name}-window")
        if not self._suites:
            raise FileNotFoundError(f"no Great Expectations suites in {suites_dir}")

    def suite_for(self, topic: str) -> str:
        """The suite a topic's windows are checked with: its own, or (a source without one) `documents`."""
        return topic if topic in self._suites or not topic.startswith("source:") else "documents"

    @property
    def suites(self) -> list[str]:
        return sorted(self._suites)

    def expectation_count(self, suite_name: str) -> int:
        return len(self._suites[suite_name].expectations)

    def validate(self, suite_name: str, rows: Sequence[Mapping[str, Any]]) -> QualityOutcome:
        """Run one suite on a window; windows too small to judge are skipped, never a crash."""
        import pandas as pd

        if len(rows) < self.min_records:
            return QualityOutcome(suite_name, True, evaluated=len(rows),
                                  skipped=f"{len(rows)} records (< {self.min_records})")
        started = time.perf_counter()
        batch = self._batches[suite_name].get_batch(batch_parameters={"dataframe": pd.DataFrame(list(rows))})
        result = batch.validate(self._suites[suite_name])
        failed = [
            FailedCheck(r.expectation_config.type, r.expectation_config.kwargs.get("column"),
                        _jsonable(r.result.get("observed_value", r.result.get("unexpected_percent"))))
            for r in result.results if not r.success
        ]
        return QualityOutcome(suite_name, bool(result.success), failed, len(rows), time.perf_counter() - started)
