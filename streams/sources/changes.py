"""Decoding a source's Kafka records into row changes: Debezium change events (JSON converter, with or without the
schema envelope, keys alike) and plain JSON rows.

Debezium's event shapes: https://debezium.io/documentation/reference/2.7/connectors/postgresql.html#postgresql-events
and https://debezium.io/documentation/reference/2.7/connectors/mysql.html#mysql-events — `op` is `c` (create), `r`
(snapshot read), `u` (update), `d` (delete), `t` (truncate) or `m` (message); `before`/`after` hold the row;
`source` says where it came from (`lsn` for PostgreSQL, `file`/`pos`/`row` for MySQL, `ts_ms` for both). A delete
is followed by a tombstone (null value) for log compaction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.errors import GristmillError

ChangeKind = Literal["upsert", "delete", "truncate", "skip"]


class Undecodable(GristmillError, ValueError):
    """A record this source's format cannot read; `loc` says which part (`value`, `key`, `value.op`, ...)."""

    def __init__(self, loc: str, reason: str) -> None:
        super().__init__(reason)
        self.loc = loc


@dataclass(frozen=True)
class RowChange:
    """What a record says happened to a row: `row` holds its fields (`after` of an upsert, `before` or the key of a
    delete), `key` the record key's fields, `source` Debezium's source block."""

    kind: ChangeKind
    row: dict[str, Any] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why a record is skipped


def _json(raw: bytes, loc: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Undecodable(loc, f"invalid UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise Undecodable(loc, f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise Undecodable(loc, "not readable JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise Undecodable(loc, f"not readable JSON: {str(exc)[:200]}") from None


def _unwrapped(data: Any) -> Any:
    """The payload of the JSON converter's schema envelope (`schemas.enable=true`), or the data as it is."""
    if isinstance(data, dict) and data.keys() == {"schema", "payload"}:
        return data["payload"]
    return data


def decode_key(raw: bytes | None) -> dict[str, Any]:
    """A record key's fields: a JSON object (enveloped or not); a scalar key is the field `key`; none: no fields."""
    if raw is None:
        return {}
    try:
        data = _unwrapped(_json(raw, "key"))
    except Undecodable:
        return {"key": raw.decode("utf-8", errors="replace")}  # a plain string key
    return data if isinstance(data, dict) else {"key": data}


def decode_debezium(key: bytes | None, value: bytes | None) -> RowChange:
    """One Debezium change event (JSON converter)."""
    return debezium_change(decode_key(key), None if value is None else _unwrapped(_json(value, "value")))


def debezium_change(key_fields: dict[str, Any], event: Any) -> RowChange:
    """A decoded Debezium change event (None: a tombstone), whatever converter it came through."""
    if event is None:
        return RowChange("skip", key=key_fields, reason="tombstone (follows a delete, for log compaction)")
    if not isinstance(event, dict):
        raise Undecodable("value", "not a Debezium change event: expected an object")
    op = event.get("op")
    source = event.get("source") if isinstance(event.get("source"), dict) else {}
    if op in ("c", "r", "u"):
        after = event.get("after")
        if not isinstance(after, dict):
            raise Undecodable("value.after", f"op {op!r} without an `after` row")
        return RowChange("upsert", after, key_fields, source)
    if op == "d":
        before = event.get("before")
        row = {**key_fields, **(before if isinstance(before, dict) else {})}
        if not row:
            raise Undecodable("value.before", "a delete whose key and `before` are both empty: no row to delete")
        return RowChange("delete", row, key_fields, source)
    if op == "t":
        return RowChange("truncate", key=key_fields, source=source)
    if op == "m":
        return RowChange("skip", key=key_fields, source=source, reason="a logical decoding message, not a row")
    if op is None:
        raise Undecodable("value.op", "not a Debezium change event: no `op` (is this topic in another format?)")
    raise Undecodable("value.op", f"unknown Debezium op {str(op)[:40]!r} (expected c, r, u, d, t or m)")


def decode_json(key: bytes | None, value: bytes | None) -> RowChange:
    """One plain JSON row (the JSON converter's envelope is unwrapped); a null value deletes the row its key names."""
    return row_change(decode_key(key), None if value is None else _unwrapped(_json(value, "value")))


def row_change(key_fields: dict[str, Any], row: Any) -> RowChange:
    """A decoded row (None: a tombstone, deleting the row its key names)."""
    if row is None:
        if not key_fields:
            raise Undecodable("key", "a tombstone (null value) without a key: no row to delete")
        return RowChange("delete", dict(key_fields), key_fields)
    if not isinstance(row, dict):
        raise Undecodable("value", "expected an object (one row)")
    return RowChange("upsert", row, key_fields)


_BINLOG_FILE = re.compile(r"\.(\d{1,9})$")


def binlog_version(source: dict[str, Any]) -> int:
    """MySQL's binlog coordinates as one growing integer: the file's sequence number (20 bits), the position in it
    (32 bits), the row within the event (11 bits): `mysql-bin.000003`, pos 154, row 1 -> 3 << 43 | 154 << 11 | 1."""
    file, pos, row = source.get("file"), source.get("pos"), source.get("row") or 0
    found = _BINLOG_FILE.search(file) if isinstance(file, str) else None
    if found is None or type(pos) is not int or type(row) is not int or pos < 0 or row < 0:
        raise Undecodable("value.source", "source.binlog needs source.file (such as mysql-bin.000003) and source.pos")
    sequence = int(found.group(1))
    if pos >= 2**32 or row >= 2**11 or sequence >= 2**20:
        raise Undecodable("value.source", f"binlog coordinates out of range: {file} {pos} row {row}")
    return sequence << 43 | pos << 11 | row
