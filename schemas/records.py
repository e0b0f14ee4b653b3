"""Record contracts of every gristmill topic (pydantic v2, strict). Imports nothing of gristmill."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.errors import InvalidFilter

MAX_TEXT_CHARS = 200_000
MAX_QUERY_CHARS = 4_000
MAX_ID_CHARS = 256
MAX_FILTER_VALUE_CHARS = 1_000
INT64 = (-(2**63), 2**63 - 1)

EntityId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
ScalarValue = str | int | float | bool | None


def _storable(value: ScalarValue) -> ScalarValue:
    """A scalar a JSON payload and the vector store can hold: no NaN or Infinity, integers within 64 bits."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and Infinity are not allowed")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        raise ValueError("integers must fit in 64 bits")
    return value


#: A metadata value as records carry it (validated: finite, 64-bit).
Scalar = Annotated[ScalarValue, AfterValidator(_storable)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: A model version's name: `v` and a number (it names directories and collections).
VersionName = Annotated[str, StringConstraints(pattern=r"^v[0-9]{1,9}$")]

#: A producer-chosen slice name (bounded, printable).
#: What a label (a segment, a user id) must not hold: C0 and C1 control characters, Unicode's line and paragraph
#: separators, and the bidi overrides and isolates that reorder a line. Everything else (a no-break space, a
#: zero-width joiner in an emoji, a newer emoji) is a label's own business. HTTP and Kafka refuse alike.
UNSAFE_IN_LABELS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _safe_label(value: str) -> str:
    if UNSAFE_IN_LABELS.search(value):
        raise ValueError("must not hold control characters, line or paragraph separators, or bidi overrides")
    return value


#: Who may read a document, and who a query is asked for: `user:alice`, `group:eng` (any text of 1-200 characters
#: without spaces, control characters, line separators or bidi overrides). Matched exactly.
MAX_PRINCIPAL_CHARS = 200
MAX_PRINCIPALS = 256
Principal = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PRINCIPAL_CHARS, pattern=r"^\S+$"),
                      AfterValidator(_safe_label)]

#: A document's version: the producer's, compared to order its events (a 64-bit signed integer from 0).
DocumentVersion = Annotated[int, Field(ge=0, le=2**63 - 1)]
Segment = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                           pattern=r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]+$"),
                    AfterValidator(_safe_label)]
#: Which side of an experiment answered: the serving version, the candidate (a split), or both interleaved.
Arm = Literal["serving", "candidate", "interleave"]
#: How an experiment exposes a candidate: answering off the served path, a share of users, or interleaved lists.
ExperimentMode = Literal["shadow", "split", "interleave"]

#: How a search ranks chunks: by the dense model, by BM25 (sparse), or both fused inside Qdrant.
SearchMode = Literal["dense", "sparse", "hybrid"]
#: Whether hits are chunks, or documents (each document's best chunk).
SearchGroup = Literal["chunk", "doc"]

#: Chunk payload fields a query may filter on, and the type each one holds; `metadata.<key>` filters a document's
#: metadata (`METADATA_KEY` names the keys a filter can reach).
FilterField = Literal["doc_id", "source", "title", "version", "model_version"]
FILTER_FIELDS: frozenset[str] = frozenset(FilterField.__args__)  # type: ignore[attr-defined]
INTEGER_FILTER_FIELDS = frozenset({"version"})
METADATA_PREFIX = "metadata."
METADATA_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")  # (fullmatch)
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")
FILTER_OPERATORS = ("any", "exists", *RANGE_OPERATORS)
MAX_ANY_VALUES = 256
#: A filter's value for one key: a scalar (exact match), or one condition object — `{"any": [...]}`,
#: `{"exists": true}`, or a range of `gt`/`gte`/`lt`/`lte` over numbers or ISO-8601 dates.
FilterValue = ScalarValue | dict[str, object]


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def filterable(key: str) -> bool:
    """Whether a filter may name `key`: a payload field, or `metadata.<key>` with a plain key."""
    return key in FILTER_FIELDS or (key.startswith(METADATA_PREFIX) and bool(METADATA_KEY.fullmatch(key[9:])))


def _exact(key: str, value: object) -> ScalarValue:
    """A value to match exactly: of the field's type (`version` an integer, the other fields strings; metadata a
    string, an integer, a boolean or a finite number)."""
    if key in INTEGER_FILTER_FIELDS:
        if type(value) is not int or not 0 <= value <= INT64[1]:
            raise InvalidFilter(f"filter {key!r} must be an integer from 0 to 2**63-1, not {_shown(value)}")
        return value
    if key in FILTER_FIELDS or isinstance(value, str):
        if not isinstance(value, str) or len(value) > MAX_FILTER_VALUE_CHARS:
            raise InvalidFilter(f"filter {key!r} must be a string of at most {MAX_FILTER_VALUE_CHARS} characters, "
                                f"not {_shown(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidFilter(f"filter {key!r} must be valid Unicode text (it holds a lone surrogate)") from None
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and INT64[0] <= value <= INT64[1]:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InvalidFilter(f"filter {key!r} must be a string, an integer, a boolean or a finite number, not "
                        f"{_shown(value)}")


def _kind(value: object) -> str:
    return "boolean" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"


def _bound(key: str, op: str, value: object) -> float | datetime:
    """A range bound: a number, or an ISO-8601 date or time (UTC when it names no offset)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if (isinstance(value, float) and not math.isfinite(value)) or (
                isinstance(value, int) and not INT64[0] <= value <= INT64[1]):
            raise InvalidFilter(f"filter {key!r}: {op} must be a finite number within 64 bits, not {_shown(value)}")
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            # as an instant in UTC (Qdrant parses RFC 3339: no seconds in an offset)
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):
            raise InvalidFilter(f"filter {key!r}: a range is over numbers or ISO-8601 dates; {op} is the string "
                                f"{value[:40]!r}") from None
    raise InvalidFilter(f"filter {key!r}: {op} must be a number or an ISO-8601 date, not {_shown(value)}")


def _condition(key: str, condition: dict[str, object]) -> dict[str, object]:
    """One condition object checked; ranges come back with their dates as ISO-8601 strings with an offset."""
    unknown = [op for op in condition if op not in FILTER_OPERATORS]
    if unknown or not condition:
        raise InvalidFilter(f"filter {key!r}: unknown operator {(unknown or ['(none)'])[0]!r}; a condition is "
                            f"one of {{\"any\": [...]}}, {{\"exists\": true}} or a range of gt, gte, lt, lte")
    ops = set(condition)
    if len(ops) > 1 and not ops <= set(RANGE_OPERATORS):
        raise InvalidFilter(f"filter {key!r}: one condition per key ({sorted(ops)} given); several keys combine "
                            "with AND")
    if "exists" in condition:
        if condition["exists"] is not True:
            raise InvalidFilter(f"filter {key!r}: exists must be true, not {_shown(condition['exists'])}")
        return {"exists": True}
    if "any" in condition:
        values = condition["any"]
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_ANY_VALUES:
            raise InvalidFilter(f"filter {key!r}: any must be a list of 1 to {MAX_ANY_VALUES} values")
        checked = [_exact(key, value) for value in values]
        if any(isinstance(value, float) for value in checked):
            raise InvalidFilter(f"filter {key!r}: any matches strings, integers or booleans, not fractions")
        if len({_kind(value) for value in checked}) > 1:
            raise InvalidFilter(f"filter {key!r}: any mixes types ({sorted({_kind(v) for v in checked})})")
        return {"any": checked}
    if key in FILTER_FIELDS and key not in INTEGER_FILTER_FIELDS:
        raise InvalidFilter(f"filter {key!r}: a range needs numbers or dates; {key} holds strings")
    bounds = {op: _bound(key, op, value) for op, value in condition.items()}
    if len({isinstance(bound, datetime) for bound in bounds.values()}) > 1:
        raise InvalidFilter(f"filter {key!r}: a range mixes numbers and dates")
    if key in INTEGER_FILTER_FIELDS and any(isinstance(bound, datetime) for bound in bounds.values()):
        raise InvalidFilter(f"filter {key!r}: a range over {key} is over integers, not dates")
    return {op: bound.isoformat() if isinstance(bound, datetime) else bound for op, bound in bounds.items()}


def validate_filter(filter_: Mapping[str, object] | None) -> dict[str, FilterValue]:
    """A payload filter, checked (`InvalidFilter` otherwise): known keys only (an unknown key is an error, not an
    empty result), each with an exact value of its type or one condition object (`FilterValue`); keys combine with
    AND. The HTTP API and the `queries` contract both check with this."""
    checked = dict(filter_ or {})
    unknown = sorted(key for key in checked if not filterable(key))
    if unknown:
        raise InvalidFilter(f"cannot filter on {unknown}; filterable: {sorted(FILTER_FIELDS)} and metadata.<key> "
                            "(letters, digits, _ and -)")
    return {key: _condition(key, value) if isinstance(value, dict) else _exact(key, value)
            for key, value in checked.items()}


def filter_cache_key(filter_: Mapping[str, FilterValue]) -> str:
    """A checked filter as one canonical string (a cache key)."""
    return json.dumps(filter_, sort_keys=True, separators=(",", ":"))


def _integer_label(value: object) -> object:
    if isinstance(value, bool) or (value is not None and not isinstance(value, int)):
        raise ValueError(f"label must be the integer -1, 0 or 1, not {_shown(value)}")
    return value


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
    version: DocumentVersion
    op: Literal["upsert", "delete"]
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    title: str | None = Field(default=None, max_length=1_000)
    source: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Scalar] = Field(default_factory=dict, max_length=64)
    acl: list[Principal] | None = Field(default=None, min_length=1, max_length=MAX_PRINCIPALS, description=(
        "Who may read the document: principals such as user:alice or group:eng; a search returns it only to a "
        "caller holding one of them. Absent: public (every caller)."))
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
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S")]
    top_k: int = Field(default=10, ge=1, le=1000)
    filter: dict[str, Any] = Field(default_factory=dict, max_length=16, description="Payload conditions, "
                                           "combined with AND: a field or `metadata.<key>` to an exact value, "
                                           "{\"any\": [...]}, {\"exists\": true} or a range of gt/gte/lt/lte "
                                           "over numbers or ISO-8601 dates.")
    mode: SearchMode | None = Field(default=None, description="dense, sparse or hybrid; absent: the worker's "
                                                              "default (hybrid unless configured).")
    group: SearchGroup = Field(default="chunk", description="doc: at most one hit per document, so top_k counts "
                                                            "documents.")
    user_id: Annotated[EntityId, AfterValidator(_safe_label)] | None = None
    segment: Segment | None = Field(default=None, description="The producer's slice of this query (e.g. a tenant or "
                                                              "a client); online metrics are reported per segment.")
    principals: list[Principal] | None = Field(default=None, max_length=MAX_PRINCIPALS, description=(
        "Who the query is asked for: it is answered from public documents and those whose acl names one of these. "
        "Absent or empty: public documents only. Whoever may write to this topic may claim any principal."))
    ts: datetime | None = None

    @field_validator("filter")
    @classmethod
    def _typed_filter(cls, value: dict[str, Any]) -> dict[str, FilterValue]:
        try:
            return validate_filter(value)
        except InvalidFilter as exc:
            raise ValueError(str(exc)) from exc


class AttributedQueryEvent(QueryEvent):
    """`queries` where `GRISTMILL_QUERY_PRINCIPALS_REQUIRED` is set: `principals` must be given (an empty list asks
    for public documents only), so no producer forgets whom it asks for."""

    principals: list[Principal] = Field(max_length=MAX_PRINCIPALS, description=QueryEvent.model_fields[
        "principals"].description)


class FeedbackEvent(Record):
    """`feedback` topic: a judgement of one served hit; exactly one of `label` or `rating`."""

    query_id: EntityId
    doc_id: EntityId
    label: Annotated[Literal[-1, 0, 1], BeforeValidator(_integer_label)] | None = None
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
    score: FiniteFloat
    text: str


class QueryResponse(Record):
    """`responses` topic: the answer to one query, stamped with the versions that produced it."""

    query_id: str
    hits: list[Hit]
    model_version: str
    index_version: str
    latency_ms: FiniteFloat
    cached: bool
    mode: SearchMode = Field(description="The mode that answered (dense where the index has no sparse vectors).")
    group: SearchGroup = "chunk"
    arm: Arm = Field(default="serving", description="Which side of a running experiment answered (model_version and "
                                                    "index_version name it; `interleave`: both, hits credited).")
    experiment: str | None = Field(default=None, max_length=64, description="The experiment this answer is part of.")


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
    exception: str | None = Field(default=None, description="Type of the exception that failed the record while it "
                                                           "was processed (absent when validation rejected it).")
    value_truncated: bool = Field(default=False, description="Only a prefix of the value is kept: the whole one "
                                                             "would not fit the producer's size limit.")
    value_size: int | None = Field(default=None, ge=0, description="Size in bytes of the value as received, when "
                                                                    "truncated.")
    value_sha256: str | None = Field(default=None, description="sha256 of the value as received, when truncated.")
    key_truncated: bool = False


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


class ExperimentSpec(Record):
    """A live experiment of a candidate version against the serving one."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    mode: ExperimentMode
    fraction: float = Field(gt=0.0, le=1.0, description="Share of queries (shadow, interleave) or of users (split) "
                                                         "the candidate sees.")


class ModelUpdate(Record):
    """`model-updates` topic (compacted, keyed by model name): lifecycle of a model version. `experiment` starts a
    live experiment of `version` (the spec in `experiment`); `stopped` ends it without a switch; a decision that ends
    it in a switch is `promoted`, with the evidence in `metrics`."""

    version: VersionName
    uri: str = Field(max_length=2_000)
    status: Literal["candidate", "promoted", "rejected", "rolled_back", "failed", "experiment", "stopped"]
    experiment: ExperimentSpec | None = None
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict)
    trained_on: dict[str, ScalarValue | list[int] | dict[str, list[int]]] = Field(default_factory=dict)
    reason: str | None = Field(default=None, max_length=2_000, description="Why rejected, failed or rolled back.")
    previous_version: VersionName | None = Field(default=None, description="The serving version this one replaces.")
    at: datetime | None = Field(default=None, description="When the status was decided.")


class IndexChange(Record):
    """`index-changes` topic (internal, short retention): a worker rewrote or deleted indexed documents. Every worker
    reads it outside its consumer group and drops its cached answers, so no worker serves a changed document from
    its cache after the write."""

    worker: str = Field(min_length=1, max_length=200, description="The worker that wrote (it ignores its own).")
    index_version: str = Field(max_length=200)
    doc_ids: list[EntityId] = Field(max_length=10_000)
    at: datetime | None = None


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
    "index-changes": IndexChange,
}
