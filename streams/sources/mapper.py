"""A source's records -> document events: decode (`streams.sources.changes`), filter, render the templates, version.

`SourceContract` is the validation gate of a source topic: each record becomes an accepted `DocumentEvent`, a
dead letter naming the source and the reason, or nothing (a tombstone after a Debezium delete, a logical decoding
message). What it accepts goes through the same indexer as `documents`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import ValidationError

from schemas import DocumentEvent, FieldError, Record
from schemas.errors import GristmillError
from schemas.records import DocumentVersion
from streams import metrics
from streams.processing import Contract
from streams.sources.changes import (
    RowChange,
    Undecodable,
    binlog_version,
    debezium_change,
    decode_debezium,
    decode_json,
    decode_key,
    row_change,
)
from streams.sources.mapping import REGISTRY_FORMATS, SourceMapping, Template
from streams.sources.registry import RegistryDecoder, RegistryUnavailable, schema_id
from streams.validation import Accepted, RawMessage, Rejected

_MISSING = object()
_PRINCIPAL_SEPARATORS = re.compile(r"[,\s]+")


class Unmappable(GristmillError, ValueError):
    """A row the mapping cannot render: a missing field, a value of the wrong type, no version."""

    def __init__(self, loc: str, reason: str) -> None:
        super().__init__(reason)
        self.loc = loc


class Truncated(GristmillError):
    """A Debezium truncate of a source that does not delete on truncates: every row of the table is gone."""

    loc = "value.op"


def field_value(row: Mapping[str, Any], path: str) -> Any:
    """`row[path]`, dots reaching into nested objects; `_MISSING` where there is no such field."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _plain(value: Any) -> Any:
    """A decoded value as JSON would hold it: Avro's logical types (dates and times, decimals, UUIDs) as text or
    numbers."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, UUID):
        return str(value)
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, Decimal):  # exactly as written: 42 stays 42, not 42.0
        return str(value)
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        raise TypeError("binary")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def render(template: Template, row: Mapping[str, Any], what: str, required: bool = False) -> str:
    """The template over the row; a missing field is `Unmappable`, a null one renders empty (`required`: a null or
    empty one is `Unmappable` too, as every part of an id must be there)."""
    out = []
    for literal, path in template.parts:
        out.append(literal)
        if path is not None:
            value = field_value(row, path)
            if value is _MISSING:
                raise Unmappable(f"row.{path}", f"{what}: the row has no field {path!r}")
            if required and (value is None or value == ""):
                raise Unmappable(f"row.{path}", f"{what}: {path!r} is {'null' if value is None else 'empty'}")
            try:
                out.append(_as_text(value))
            except TypeError:
                raise Unmappable(f"row.{path}", f"{what}: {path!r} holds binary data, not text") from None
    return "".join(out)


def typed_value(template: Template, row: Mapping[str, Any], what: str) -> Any:
    """A metadata value: the field's own type for a one-field template (`"{year}"` keeps an integer), else text;
    None (a null field) leaves the key out."""
    path = template.single_field
    if path is None:
        return render(template, row, what)
    value = field_value(row, path)
    if value is _MISSING:
        raise Unmappable(f"row.{path}", f"{what}: the row has no field {path!r}")
    value = _plain(value)
    if isinstance(value, dict | list | bytes):
        raise Unmappable(f"row.{path}", f"{what}: {path!r} holds a {type(value).__name__}, not a single value")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unmappable(f"row.{path}", f"{what}: {path!r} is {value}, not a finite number")
    return value


def _version_of(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:  # microseconds since the epoch: a later time, a higher version
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return int(moment.timestamp() * 1_000_000)
    raise Unmappable(f"row.{path}", f"version: {path!r} holds a {type(value).__name__} that is neither an integer "
                                    "nor an ISO-8601 time")


class SourceTruncation(Record):
    """Every document of the source whose version is older than `version` is gone (a Debezium truncate)."""

    version: DocumentVersion


@dataclass
class SourceCounts:
    """Records of one source so far: in, mapped to a document event, skipped quietly, dead-lettered."""

    records: int = 0
    mapped: int = 0
    skipped: int = 0
    deadlettered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"records": self.records, "mapped": self.mapped, "skipped": self.skipped,
                "deadlettered": self.deadlettered}


@dataclass(frozen=True)
class SourceMapper:
    """Turns one source's records into document events (`registry`: the decoder of a registry-framed source)."""

    mapping: SourceMapping
    registry: RegistryDecoder | None = None

    def change(self, message: RawMessage) -> RowChange:
        if self.registry is None:
            decode = decode_debezium if self.mapping.format == "debezium-json" else decode_json
            return decode(message.key, message.value)
        key = message.key
        if schema_id(key) is None:
            key_fields = decode_key(key)
        else:
            decoded = self.registry.decode(key, "key")
            key_fields = decoded if isinstance(decoded, dict) else {"key": decoded}
        value = self.registry.decode(message.value, "value")
        return (debezium_change if self.mapping.changes == "debezium" else row_change)(key_fields, value)

    def document(self, message: RawMessage) -> DocumentEvent | SourceTruncation | None:
        """The document event of a record (a truncate of a source that deletes on truncates: `SourceTruncation`);
        None for a record skipped quietly. Raises `Undecodable`, `Unmappable`, `Truncated` or pydantic's
        `ValidationError` (the event the row renders is not a valid document)."""
        return self.from_change(self.change(message), message)

    def from_change(self, change: RowChange, message: RawMessage) -> DocumentEvent | SourceTruncation | None:
        """`document` of a change already decoded."""
        if change.kind == "skip":
            return None
        if change.kind == "truncate":
            if self.mapping.on_truncate == "delete-all":
                return SourceTruncation(version=self.version(change, message))
            raise Truncated("a truncate removes every row of the table; gristmill deletes the source's documents "
                            "only with `on_truncate: delete-all` (delete them, or re-snapshot)")
        m = self.mapping
        doc_id = render(m.doc_id, change.row, "doc_id", required=True)
        version = self.version(change, message)
        if change.kind == "delete" or not self.admits(change.row):
            return DocumentEvent.model_validate({"doc_id": doc_id, "version": version, "op": "delete",
                                                 "source": m.name})
        metadata = {}
        for key, template in m.metadata.items():
            value = typed_value(template, change.row, f"metadata.{key}")
            if value is not None:
                metadata[key] = value
        event: dict[str, Any] = {"doc_id": doc_id, "version": version, "op": "upsert", "source": m.name,
                                 "text": render(m.text, change.row, "text"), "metadata": metadata}
        if m.title is not None:
            title = render(m.title, change.row, "title").strip()
            if title:
                event["title"] = title
        if m.acl is not None:
            event["acl"] = self.principals(change.row)
        return DocumentEvent.model_validate(event)

    def admits(self, row: Mapping[str, Any]) -> bool:
        """Whether the row passes the source's filter (every `where` field equal to its value, or to one of its
        list). A row without the field, or whose field's type is none of the filter's (YAML reads an unquoted `off`
        as false), is `Unmappable`: a renamed column must not delete every document of the source."""
        for path, allowed in self.mapping.where.items():
            value = _plain(field_value(row, path))
            if value is _MISSING:
                raise Unmappable(f"row.{path}", f"where: the row has no field {path!r}")
            options = allowed if isinstance(allowed, list) else [allowed]
            comparable = [o for o in options if type(o) is type(value) or (
                type(value) in (int, float) and type(o) in (int, float))]
            if not comparable and value is not None:
                raise Unmappable(f"row.{path}", f"where: {path!r} holds a {type(value).__name__}, the filter "
                                                f"{', '.join(sorted({type(o).__name__ for o in options}))} (quote a "
                                                "text value in the sources file)")
            if not any(value == option for option in comparable):
                return False
        return True

    def principals(self, row: Mapping[str, Any]) -> list[str]:
        path = self.mapping.acl
        assert path is not None
        value = field_value(row, path)
        if isinstance(value, str):
            value = [p for p in _PRINCIPAL_SEPARATORS.split(value) if p]
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise Unmappable(f"row.{path}", f"acl: {path!r} must hold principals (a list of strings, or one string "
                                            "of them separated by commas)")
        if not value:  # fail closed: a row meant to carry its readers never becomes public by leaving them out
            raise Unmappable(f"row.{path}", f"acl: {path!r} is empty; a document of this source needs principals")
        return value

    def version(self, change: RowChange, message: RawMessage) -> int:
        origin = self.mapping.version
        if origin == "kafka.offset":
            return message.offset
        if origin == "kafka.timestamp":
            if message.timestamp is None:
                raise Unmappable("timestamp", "version: the record has no timestamp")
            return int(message.timestamp * 1000)
        if origin == "source.binlog":
            return binlog_version(change.source)
        if origin in ("source.lsn", "source.ts_ms"):
            value = change.source.get(origin.removeprefix("source."))
            if not isinstance(value, int) or isinstance(value, bool):
                raise Unmappable(f"value.{origin}", f"version: the event has no integer {origin}")
            return value
        value = field_value(change.row, origin)
        if value is _MISSING or value is None:
            hint = "" if change.kind != "delete" else (
                " (a delete's `before` holds only the key unless the table has REPLICA IDENTITY FULL: version by "
                "source.lsn or source.ts_ms)" if self.mapping.changes == "debezium" else
                " (a tombstone holds no row: version a topic with tombstones by kafka.offset or kafka.timestamp)")
            raise Unmappable(f"row.{origin}", f"version: the row has no {origin!r}{hint}")
        return _version_of(value, origin)


def _errors(exc: Exception, source: str) -> tuple[FieldError, ...]:
    if isinstance(exc, ValidationError):
        return tuple(FieldError(loc=".".join(str(p) for p in e["loc"]) or "document",
                                msg=f"source {source}: the document is invalid: {e['msg']}")
                     for e in exc.errors(include_url=False))
    loc = getattr(exc, "loc", "value")
    return (FieldError(loc=loc, msg=f"source {source}: {exc}"),)


@dataclass(frozen=True)
class SourceContract(Contract[DocumentEvent | SourceTruncation]):  # type: ignore[type-var]
    """The gate of a source topic (consumed by its own name, outside gristmill's namespace)."""

    mapper: SourceMapper | None = None
    counts: SourceCounts = field(default_factory=SourceCounts)

    @classmethod
    def of(cls, mapping: SourceMapping, registry: SchemaRegistryClient | None = None) -> SourceContract:
        """The gate of `mapping`'s topic; a registry-framed source needs the `registry` client."""
        decoder = None
        if mapping.format in REGISTRY_FORMATS:
            if registry is None:
                raise ValueError(f"source {mapping.name} is {mapping.format}: it needs a schema registry client")
            decoder = RegistryDecoder(registry, mapping.format, mapping.topic)  # type: ignore[arg-type]
        return cls(f"source:{mapping.name}", DocumentEvent, None, consumes=mapping.topic,
                   mapper=SourceMapper(mapping, decoder))

    async def prepare(self, messages: Sequence[RawMessage]) -> None:
        """The schemas a registry-framed batch names, fetched before it is checked."""
        if self.mapper is not None and self.mapper.registry is not None:
            await self.mapper.registry.fetch([m.value for m in messages] + [m.key for m in messages])

    def check(self, message: RawMessage) -> Accepted[DocumentEvent | SourceTruncation] | Rejected | None:
        assert self.mapper is not None
        name = self.mapper.mapping.name
        self.counts.records += 1
        try:
            event = self.mapper.document(message)
        except (Undecodable, Unmappable, Truncated, ValidationError) as exc:
            return self.rejected(message, _errors(exc, name))
        except RegistryUnavailable:
            raise  # not the record's fault: the batch is read again once the registry answers
        except Exception as exc:  # whatever else a record makes the decoding raise costs that record only
            return self.rejected(message, (FieldError(loc="value", msg=f"source {name}: {type(exc).__name__}: "
                                                                       f"{str(exc)[:300]}"),), type(exc).__name__)
        if event is None:
            self.counts.skipped += 1
            metrics.SOURCE_RECORDS.labels(name, "skipped").inc()
            return None
        self.counts.mapped += 1
        metrics.SOURCE_RECORDS.labels(name, "mapped").inc()
        return Accepted(message, event)

    def rejected(self, message: RawMessage, errors: tuple[FieldError, ...], exception: str | None = None,
                 mapped: bool = False) -> Rejected:
        """A dead letter of this source, counted (`mapped`: one that was counted as mapped, then refused)."""
        assert self.mapper is not None
        name = self.mapper.mapping.name
        self.counts.deadlettered += 1
        metrics.SOURCE_RECORDS.labels(name, "deadlettered").inc()
        if mapped:
            self.counts.mapped -= 1
        return Rejected(message, errors, exception)
