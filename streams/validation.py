"""The per-record validation gate: raw Kafka bytes in, a typed record or field-level reasons out."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import ValidationError

from schemas import DeadLetter, FieldError, Record

R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One consumed Kafka message, exactly as received."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # broker/producer time, epoch seconds


@dataclass(frozen=True, slots=True)
class Accepted(Generic[R]):
    message: RawMessage
    record: R


@dataclass(frozen=True, slots=True)
class Rejected:
    message: RawMessage
    errors: tuple[FieldError, ...]

    @property
    def reason(self) -> str:
        """A short, low-cardinality label for metrics: the first error's kind."""
        return self.errors[0].msg.split(":")[0][:60]

    def dead_letter(self) -> DeadLetter:
        key, key_encoding = _as_text(self.message.key)
        value, value_encoding = _as_text(self.message.value)
        return DeadLetter(
            topic=self.message.topic,
            partition=self.message.partition,
            offset=self.message.offset,
            key=key,
            key_encoding=key_encoding,
            value=value,
            value_encoding=value_encoding,
            errors=list(self.errors),
            ts=datetime.now(UTC),
        )


def _as_text(raw: bytes | None) -> tuple[str | None, str]:
    if raw is None:
        return None, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _error(loc: str, msg: str) -> tuple[FieldError, ...]:
    return (FieldError(loc=loc, msg=msg),)


def validate_message(message: RawMessage, model: type[R], key_field: str | None) -> Accepted[R] | Rejected:
    """Decode and validate one message against `model`; the key must equal the record's `key_field` (when
    the record has one: `retrain` and `model-updates` are keyed by model name)."""
    if message.value is None:
        return Rejected(message, _error("value", "null value (tombstone): a JSON object is required"))
    try:
        text = message.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(message, _error("value", f"invalid UTF-8: {exc.reason} at byte {exc.start}"))
    try:
        record = model.model_validate_json(text)
    except ValidationError as exc:
        errors = tuple(
            FieldError(loc=".".join(str(part) for part in err["loc"]) or "value", msg=_message(err))
            for err in exc.errors(include_url=False)
        )
        return Rejected(message, errors)
    if key_field is None:
        return Accepted(message, record)
    expected = getattr(record, key_field)
    if message.key is None:
        return Rejected(message, _error("key", f"missing key: the message key must equal {key_field}"))
    if message.key != expected.encode("utf-8"):
        shown = message.key.decode("utf-8", errors="replace")[:80]
        return Rejected(message, _error("key", f"key mismatch: key {shown!r} != {key_field} {expected!r}"))
    return Accepted(message, record)


def _message(err: dict) -> str:  # type: ignore[type-arg]
    kind = err["type"]
    if kind == "json_invalid":
        return f"not valid JSON: {err['ctx'].get('error', '')}" if err.get("ctx") else "not valid JSON"
    if kind == "model_type":
        return "not a JSON object"
    if kind == "extra_forbidden":
        return "extra_forbidden: unknown field"
    if kind == "missing":
        return "missing: field required"
    return f"{kind}: {err['msg']}"
