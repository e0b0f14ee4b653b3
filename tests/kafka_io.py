"""Kafka helpers of the integration tests: produce raw records, read a topic from the start."""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import Consumer, Producer


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 4_000_000})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Read `topic` from the start until `expected` records arrived (or time runs out)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            found.append(json.loads(message.value()))
    finally:
        consumer.close()
    return found
