"""Record contracts of every gristmill topic (pydantic v2, strict). Imports nothing of gristmill."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.errors import InvalidFilter

MAX_TEXT_CHARS = 200_000
MAX_ID_CHARS = 256

EntityId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
ScalarValue = str | int | float | bool | None

#: Chunk payload fields a query may filter on (exact match).
FilterField = Literal["doc_id", "source", "title", "version", "model_version"]
FILTER_FIELDS: frozenset[str] = frozenset(FilterField.__args__)  # type: ignore[attr-defined]


def validate_filter(filter_: Mapping[str, ScalarValue] | None) -> dict[str, ScalarValue]:
    """An exact-match payload filter, checked: an unknown field is an error, not an empty result."""
    checked = dict(filter_ or {})
    unknown = set(checked) - FILTER_FIELDS
    if unknown:
        raise InvalidFilter(f"cannot filter on {sorted(unknown)}; filterable: {sorted(FILTER_FIELDS)}")
    return checked


def document_content(title: str | None, text: str | None) -> str:
    """What the index chunks and embeds for a document: the title, then the body."""
    body = text or ""
    return f"{title}\n\n{body}" if title else body


class Record(BaseModel):
    """Base of all topic records: strict types, unknown fields rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DocumentEvent(Record):
    """`documents` topic: an upsert or delete of one document at a version."""

    doc_id: EntityId
    version: int = Field(ge=0, le=2**63 - 1)
    op: Literal["upsert", "delete"]
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    title: str | None = Field(default=None, max_length=1_000)
    source: str | None = Field(default=None, max_length=256)
    metadata: dict[str, ScalarValue] = Field(default_factory=dict, max_length=64)
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _upsert_needs_text(self) -> DocumentEvent:
        if self.op == "upsert" and (self.text is None or not self.text.strip()):
            raise ValueError("text is required and must not be blank when op is 'upsert'")
        return self

    @property
    def content(self) -> str:
        """What gets chunked and embedded (`document_content`)."""
        return document_content(self.title, self.text)


class QueryEvent(Record):
    """`queries` topic: one search request."""

    query_id: EntityId
    text: Annotated[str, StringConstraints(min_length=1, max_length=4_000, pattern=r"\S")]
    top_k: int = Field(default=10, ge=1, le=1000)
    filter: dict[FilterField, ScalarValue] = Field(default_factory=dict, max_length=8)
    user_id: EntityId | None = None
    ts: datetime | None = None


class FeedbackEvent(Record):
    """`feedback` topic: a judgement of one served hit; exactly one of `label` or `rating`."""

    query_id: EntityId
    doc_id: EntityId
    label: Literal[-1, 0, 1] | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    user_id: EntityId | None = None
    ts: datetime | None = None

    @model_validator(mode="after")
    def _one_judgement(self) -> FeedbackEvent:
        if (self.label is None) == (self.rating is None):
            raise ValueError("exactly one of 'label' or 'rating' is required")
        return self

    @property
    def judgement(self) -> int:
        """-1/0/1 from the label, or from the rating (1-2 negative, 3 neutral, 4-5 positive)."""
        if self.label is not None:
            return self.label
        rating = self.rating or 3
        return 1 if rating >= 4 else (-1 if rating <= 2 else 0)


class Hit(Record):
    doc_id: str
    chunk: int
    score: float
    text: str


class QueryResponse(Record):
    """`responses` topic: the answer to one query, stamped with the versions that produced it."""

    query_id: str
    hits: list[Hit]
    model_version: str
    index_version: str
    latency_ms: float
    cached: bool


class FieldError(Record):
    loc: str
    msg: str


class DeadLetter(Record):
    """`deadletter` topic: a rejected record exactly as received, with the reasons."""

    topic: str
    partition: int
    offset: int
    key: str | None
    key_encoding: Literal["utf-8", "base64"] = "utf-8"
    value: str | None
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    errors: list[FieldError] = Field(min_length=1)
    ts: datetime


class RetrainRequest(Record):
    """`retrain` topic: ask the trainer for a new model version."""

    reason: Literal["feedback", "drift", "manual", "schedule"]
    pairs: int = Field(ge=0)
    requested_at: datetime


class QualityWindow(Record):
    start: datetime
    end: datetime
    records: int = Field(ge=0)


class FailedExpectation(Record):
    expectation: str
    column: str | None
    observed: ScalarValue | list[ScalarValue] | dict[str, ScalarValue]


class QualityReport(Record):
    """`quality` topic: Great Expectations and drift results of one window."""

    window: QualityWindow
    suite: str
    success: bool
    failed: list[FailedExpectation]
    drift: dict[str, float]


class ModelUpdate(Record):
    """`model-updates` topic (compacted, keyed by model name): lifecycle of a model version."""

    version: str
    uri: str
    status: Literal["candidate", "promoted", "rejected", "rolled_back", "failed"]
    metrics: dict[str, float] = Field(default_factory=dict)
    trained_on: dict[str, ScalarValue | list[int] | dict[str, list[int]]] = Field(default_factory=dict)
    reason: str | None = Field(default=None, max_length=2_000, description="Why rejected, failed or rolled back.")
    previous_version: str | None = Field(default=None, description="The serving version this one replaces.")
    at: datetime | None = Field(default=None, description="When the status was decided.")


#: The record contract of each public topic (before the namespace prefix).
TOPIC_RECORDS: dict[str, type[Record]] = {
    "documents": DocumentEvent,
    "queries": QueryEvent,
    "feedback": FeedbackEvent,
    "responses": QueryResponse,
    "deadletter": DeadLetter,
    "retrain": RetrainRequest,
    "quality": QualityReport,
    "model-updates": ModelUpdate,
}
