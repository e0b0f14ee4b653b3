"""Record contracts (pydantic models), their published JSON Schemas, and the data-quality suites."""

from schemas.records import (
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
)

__all__ = [
    "TOPIC_RECORDS",
    "DeadLetter",
    "DocumentEvent",
    "FeedbackEvent",
    "FieldError",
    "Hit",
    "ModelUpdate",
    "QualityReport",
    "QueryEvent",
    "QueryResponse",
    "Record",
    "RetrainRequest",
]
