"""The per-record validation gate: raw Kafka bytes in, a typed record or field-level reasons out."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

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


#: Dead letters keep at most this many reasons, each at most this long, and keys of at most this many bytes.
MAX_REASONS, MAX_REASON_CHARS, MAX_KEY_BYTES = 20, 1_000, 1_024
#: What a produced record costs beyond its key and value (record batch framing, headers).
RECORD_OVERHEAD_BYTES = 512


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that becomes a dead letter: rejected by validation, or failed while processed (`exception`)."""

    message: RawMessage
    errors: tuple[FieldError, ...]
    exception: str | None = None  # the exception type, when processing (not validation) failed the record

    @property
    def reason(self) -> str:
        """A short, low-cardinality label for metrics: the first error's kind, or the exception type."""
        if self.exception:
            return f"exception: {self.exception}"[:60]
        return self.errors[0].msg.split(":")[0][:60]

    def dead_letter(self, max_bytes: int = 900_000) -> tuple[bytes | None, DeadLetter]:
        """The dead letter and its Kafka key, which together fit `max_bytes`: past that, the longest prefix of the
        value that fits is kept (`value_truncated`, with the value's size and sha256); a key over 1 KiB is cut
        (`key_truncated`). Reasons, topic, partition and offset are always kept."""
        key = self.message.key
        key_truncated = key is not None and len(key) > MAX_KEY_BYTES
        if key is not None and key_truncated:
            key = key[:MAX_KEY_BYTES]
        errors = [FieldError(loc=e.loc[:200], msg=e.msg[:MAX_REASON_CHARS]) for e in self.errors[:MAX_REASONS]]
        budget = max_bytes - len(key or b"") - RECORD_OVERHEAD_BYTES
        value = self.message.value

        def letter(kept: bytes | str | None, truncated: bool = False) -> DeadLetter:
            text, encoding = _as_text(kept) if not isinstance(kept, str) else (kept, "utf-8")
            return DeadLetter(
                topic=self.message.topic, partition=self.message.partition, offset=self.message.offset,
                key=_as_text(key)[0], key_encoding=_as_text(key)[1], key_truncated=key_truncated,
                value=text, value_encoding=encoding, errors=errors, ts=datetime.now(UTC), exception=self.exception,
                value_truncated=truncated, value_size=len(value) if truncated and value is not None else None,
                value_sha256=hashlib.sha256(value).hexdigest() if truncated and value is not None else None)

        whole = letter(value)
        if value is None or _size(whole) <= budget:
            return key, whole
        try:  # text stays text: cut at a character, not inside one
            source: bytes | str = value.decode("utf-8")
        except UnicodeDecodeError:
            source = value
        low, high = 0, len(source)
        while low < high:  # the longest prefix that fits
            middle = (low + high + 1) // 2
            if _size(letter(source[:middle], truncated=True)) <= budget:
                low = middle
            else:
                high = middle - 1
        return key, letter(source[:low], truncated=True)


def _size(letter: DeadLetter) -> int:
    return len(letter.model_dump_json().encode())


def _as_text(raw: bytes | None) -> tuple[str | None, Literal["utf-8", "base64"]]:
    if raw is None:
        return None, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def failed(message: RawMessage, exc: BaseException) -> Rejected:
    """The dead letter of a record whose processing raised: the reason and the exception type."""
    return Rejected(message, (FieldError(loc="record", msg=f"{type(exc).__name__}: {exc}"),), type(exc).__name__)


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
