"""Decoding Debezium change events and JSON rows (event shapes: `debezium_events`, after Debezium 2.x's docs)."""

from __future__ import annotations

import pytest

from streams.sources.changes import Undecodable, binlog_version, decode_debezium, decode_json, decode_key
from tests.streams.sources.debezium_events import (
    KEY_SCHEMA,
    VALUE_SCHEMA,
    encode,
    enveloped,
    mysql_event,
    pg_event,
    row,
)


@pytest.mark.parametrize("with_schema", [False, True])
def test_postgres_create_update_delete_with_and_without_the_schema_envelope(with_schema: bool) -> None:
    def wrap(value: object, schema: dict[str, object]) -> bytes | None:
        return encode(enveloped(value, schema) if with_schema else value)

    key = wrap({"id": 1}, KEY_SCHEMA)
    created = decode_debezium(key, wrap(pg_event("c", 100, after=row(1, "T", "B")), VALUE_SCHEMA))
    assert created.kind == "upsert" and created.row["title"] == "T" and created.key == {"id": 1}
    assert created.source["lsn"] == 100
    snapshot = decode_debezium(key, wrap(pg_event("r", 90, after=row(1, "T", "B")), VALUE_SCHEMA))
    updated = decode_debezium(key, wrap(pg_event("u", 110, after=row(1, "T2", "B2")), VALUE_SCHEMA))
    assert snapshot.kind == updated.kind == "upsert" and updated.row["body"] == "B2"
    deleted = decode_debezium(key, wrap(pg_event("d", 120, before={"id": 1}), VALUE_SCHEMA))
    assert deleted.kind == "delete" and deleted.row == {"id": 1} and deleted.source["lsn"] == 120


def test_mysql_delete_keeps_the_whole_before_row_and_binlog_coordinates_grow() -> None:
    deleted = decode_debezium(encode({"id": 7}), encode(mysql_event("d", "mysql-bin.000003", 805,
                                                                    before=row(7, "T", "B"))))
    assert deleted.kind == "delete" and deleted.row["title"] == "T"
    versions = [binlog_version({"file": f, "pos": p, "row": r}) for f, p, r in [
        ("mysql-bin.000003", 154, 0), ("mysql-bin.000003", 154, 1), ("mysql-bin.000003", 484, 0),
        ("mysql-bin.000004", 4, 0), ("mysql-bin.000010", 4, 0)]]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    for bad in ({"file": "mysql-bin", "pos": 4}, {"file": "mysql-bin.000001"}, {"file": "b.1", "pos": "4"},
                {"file": "b.1", "pos": 2**33}):
        with pytest.raises(Undecodable):
            binlog_version(bad)


def test_tombstones_and_messages_are_skipped_truncates_reported() -> None:
    assert decode_debezium(encode({"id": 1}), None).kind == "skip"
    message = {"op": "m", "ts_ms": 1, "source": {"lsn": 5}, "message": {"prefix": "p", "content": "Ymfy"}}
    assert decode_debezium(None, encode(message)).kind == "skip"
    assert decode_debezium(None, encode(pg_event("t", 130))).kind == "truncate"


@pytest.mark.parametrize(("value", "loc"), [
    (b"\xff\xfe", "value"), (b"{not json", "value"), (b"[1, 2]", "value"), (b'{"after": {"id": 1}}', "value.op"),
    (b'{"op": "x"}', "value.op"), (b'{"op": "c", "after": null}', "value.after"),
    (b'{"op": "d", "before": null}', "value.before"),
])
def test_what_is_not_a_change_event_says_where(value: bytes, loc: str) -> None:
    with pytest.raises(Undecodable) as caught:
        decode_debezium(None, value)
    assert caught.value.loc == loc


def test_plain_json_rows_and_their_tombstones() -> None:
    upsert = decode_json(b"42", encode(enveloped({"id": 42, "text": "x"}, {"type": "struct"})))
    assert upsert.kind == "upsert" and upsert.row == {"id": 42, "text": "x"} and upsert.key == {"key": 42}
    deleted = decode_json(encode({"id": 42}), None)
    assert deleted.kind == "delete" and deleted.row == {"id": 42}
    with pytest.raises(Undecodable):
        decode_json(None, None)
    with pytest.raises(Undecodable):
        decode_json(None, b'"a string"')
    assert decode_key(b"plain-key") == {"key": "plain-key"} and decode_key(None) == {}
