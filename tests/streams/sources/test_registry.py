"""Schema-registry framed sources (Confluent wire format) through confluent-kafka's serializers and its mock
registry client: Avro and JSON Schema rows, Debezium events in Avro, and what is a dead letter."""

from __future__ import annotations

import asyncio
import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import DocumentEvent
from streams.settings import Settings
from streams.sources.mapper import SourceContract
from streams.sources.mapping import InvalidSources, configured_sources, parse_sources
from streams.sources.registry import registry_client, schema_id
from streams.validation import Accepted, RawMessage, Rejected

TOPIC = "shop.products"
ROW_SCHEMA = json.dumps({"type": "record", "name": "Product", "fields": [
    {"name": "id", "type": "long"}, {"name": "name", "type": "string"},
    {"name": "description", "type": ["null", "string"], "default": None},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2}},
    {"name": "updated", "type": {"type": "long", "logicalType": "timestamp-millis"}}]})
KEY_SCHEMA = json.dumps({"type": "record", "name": "ProductKey", "fields": [{"name": "id", "type": "long"}]})
DEBEZIUM_SCHEMA = json.dumps({"type": "record", "name": "Envelope", "namespace": "shop.products", "fields": [
    {"name": "before", "type": ["null", {"type": "record", "name": "Value", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": "string"},
        {"name": "description", "type": ["null", "string"], "default": None}]}], "default": None},
    {"name": "after", "type": ["null", "Value"], "default": None},
    {"name": "source", "type": {"type": "record", "name": "Source", "namespace": "io.debezium.connector.mysql",
                                "fields": [{"name": "file", "type": "string"}, {"name": "pos", "type": "long"},
                                           {"name": "row", "type": "int"}, {"name": "ts_ms", "type": "long"}]}},
    {"name": "op", "type": "string"}, {"name": "ts_ms", "type": ["null", "long"], "default": None}]})
JSON_SCHEMA = json.dumps({"type": "object", "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"}, "version": {"type": "integer"}},
    "required": ["id", "name", "version"]})


def sources(fmt: str, **more: str) -> str:
    extra = "".join(f"\n    {k}: {v}" for k, v in more.items())
    return f"""
sources:
  - name: products
    topic: {TOPIC}
    format: {fmt}
    doc_id: "product-{{id}}"
    text: "{{name}}: {{description}}"{extra}
"""


@pytest.fixture
def registry() -> SchemaRegistryClient:
    return registry_client(Settings(schema_registry_url="mock://gristmill-tests"))  # type: ignore[return-value]


def framed(serializer: Any, value: Any, field: MessageField = MessageField.VALUE) -> bytes:
    return serializer(value, SerializationContext(TOPIC, field))


def run(contract: SourceContract, key: bytes | None, value: bytes | None,
        offset: int = 0) -> Accepted[DocumentEvent] | Rejected | None:
    message = RawMessage(TOPIC, 0, offset, key, value, 1.0)
    asyncio.run(contract.prepare([message]))
    return contract.check(message)


def test_avro_rows_with_logical_types_and_avro_keys(registry: SchemaRegistryClient) -> None:
    (mapping,) = parse_sources(sources("avro", version="updated", metadata='{price: "{price}", at: "{updated}"}'))
    contract = SourceContract.of(mapping, registry)
    value = framed(AvroSerializer(registry, ROW_SCHEMA), {
        "id": 7, "name": "Kettle", "description": "Boils water.", "price": Decimal("19.99"),
        "updated": datetime(2024, 5, 1, 10, tzinfo=UTC)})
    key = framed(AvroSerializer(registry, KEY_SCHEMA), {"id": 7}, MessageField.KEY)
    assert schema_id(value) != schema_id(key)
    checked = run(contract, key, value)
    assert isinstance(checked, Accepted), checked
    event = checked.record
    assert (event.doc_id, event.op, event.text) == ("product-7", "upsert", "Kettle: Boils water.")
    assert event.metadata == {"price": 19.99, "at": "2024-05-01T10:00:00+00:00"}
    assert event.version == 1_714_557_600_000_000  # the timestamp in microseconds
    unversioned = run(contract, key, None)  # a tombstone has no row to take `updated` from
    assert isinstance(unversioned, Rejected) and "kafka.offset" in unversioned.errors[0].msg
    assert isinstance(run(contract, b"7", value), Accepted)  # a plain key beside a framed value
    by_offset = SourceContract.of(mapping.model_copy(update={"version": "kafka.offset"}), registry)
    tombstone = run(by_offset, key, None, offset=12)
    assert isinstance(tombstone, Accepted) and tombstone.record.op == "delete"  # rows: a tombstone deletes
    assert (tombstone.record.doc_id, tombstone.record.version) == ("product-7", 12)


def test_debezium_events_in_avro(registry: SchemaRegistryClient) -> None:
    (mapping,) = parse_sources(sources("avro", envelope="debezium", version="source.binlog"))
    contract = SourceContract.of(mapping, registry)
    serializer = AvroSerializer(registry, DEBEZIUM_SCHEMA)
    after = {"id": 3, "name": "Lamp", "description": None}
    source = {"file": "mysql-bin.000003", "pos": 154, "row": 0, "ts_ms": 1}
    created = run(contract, None, framed(serializer, {"before": None, "after": after, "source": source, "op": "c",
                                                      "ts_ms": 2}))
    assert isinstance(created, Accepted) and created.record.text == "Lamp: " and created.record.doc_id == "product-3"
    deleted = run(contract, None, framed(serializer, {"before": after, "after": None, "op": "d", "ts_ms": 3,
                                                      "source": {**source, "pos": 484}}))
    assert isinstance(deleted, Accepted) and deleted.record.op == "delete"
    assert deleted.record.version > created.record.version
    assert run(contract, None, None) is None  # the tombstone after a Debezium delete


def test_json_schema_rows_are_validated_by_their_schema(registry: SchemaRegistryClient) -> None:
    (mapping,) = parse_sources(sources("json-schema", version="version").replace(': {description}', ''))
    contract = SourceContract.of(mapping, registry)
    serializer = JSONSerializer(JSON_SCHEMA, registry)
    good = run(contract, None, framed(serializer, {"id": 1, "name": "Chair", "version": 4}))
    assert isinstance(good, Accepted) and good.record.text == "Chair" and good.record.version == 4
    valid = framed(serializer, {"id": 2, "name": "Desk", "version": 5})
    not_allowed = valid[:5] + json.dumps({"id": 2, "name": 3, "version": 5}).encode()  # name is not a string
    rejected = run(contract, None, not_allowed)
    assert isinstance(rejected, Rejected) and rejected.errors[0].loc == "value"
    assert "source products" in rejected.errors[0].msg and "cannot be read" in rejected.errors[0].msg


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"id": 1}', "not in the schema registry's wire format"),
    (b"\x00" + struct.pack(">I", 4242) + b"\x02", "schema id 4242 is unknown to the schema registry"),
    (None, "cannot be read"),  # replaced below by a truncated payload of a known schema
])
def test_undecodable_records_are_dead_letters_naming_the_source(registry: SchemaRegistryClient, value: bytes | None,
                                                                reason: str) -> None:
    (mapping,) = parse_sources(sources("avro", version="updated"))
    contract = SourceContract.of(mapping, registry)
    if value is None:
        value = framed(AvroSerializer(registry, KEY_SCHEMA), {"id": 7})[:5] + b"\xff\xff\xff\xff\xff\xff\xff"
    rejected = run(contract, None, value)
    assert isinstance(rejected, Rejected), rejected
    assert rejected.errors[0].msg.startswith("source products: ") and reason in rejected.errors[0].msg


def test_a_registry_that_is_away_holds_the_source_back_instead_of_dead_lettering() -> None:
    away = registry_client(Settings(schema_registry_url="http://127.0.0.1:9"))  # nothing listens there
    (mapping,) = parse_sources(sources("avro", version="updated"))
    contract = SourceContract.of(mapping, away)
    message = RawMessage(TOPIC, 0, 0, None, b"\x00" + struct.pack(">I", 1) + b"\x02", 1.0)

    async def waits() -> None:
        await asyncio.wait_for(contract.prepare([message]), 1.5)

    with pytest.raises(TimeoutError):  # still retrying: the batch is neither checked nor committed
        asyncio.run(waits())
    assert contract.counts.deadlettered == 0


def test_registry_sources_need_a_registry(tmp_path: Any) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(sources("avro", version="updated"))
    with pytest.raises(InvalidSources, match="GRISTMILL_SCHEMA_REGISTRY_URL"):
        configured_sources(path)
    assert configured_sources(path, registry=True)[0].format == "avro"
    with pytest.raises(InvalidSources, match="envelope is for the avro and json-schema formats"):
        parse_sources(sources("json", version="updated", envelope="debezium"))
