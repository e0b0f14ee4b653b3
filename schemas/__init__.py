"""Record contracts (pydantic models), their published JSON Schemas, and the data-quality suites."""

from schemas.errors import GristmillError, InvalidFilter
from schemas.records import (
    FILTER_FIELDS,
    TOPIC_RECORDS,
    DeadLetter,
    DocumentEvent,
    FeedbackEvent,
    FieldError,
    Hit,
    ModelUpdate,
    QualityReport,
    QueryEvent,
    QueryResponse,
    Record,
    RetrainRequest,
    ScalarValue,
    document_content,
    validate_filter,
)

__all__ = [
    "FILTER_FIELDS",
    "TOPIC_RECORDS",
    "DeadLetter",
    "DocumentEvent",
    "FeedbackEvent",
    "FieldError",
    "GristmillError",
    "Hit",
    "InvalidFilter",
    "ModelUpdate",
    "QualityReport",
    "QueryEvent",
    "QueryResponse",
    "Record",
    "RetrainRequest",
    "ScalarValue",
    "document_content",
    "validate_filter",
]
