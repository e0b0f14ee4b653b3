"""Records to try a mapping on (`gristmill sources check`): from a sample file, or read from the topic itself."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.errors import GristmillError
from streams.errors import TopicUnavailable
from streams.settings import Settings
from streams.topics import kafka_config
from streams.validation import RawMessage


class InvalidSample(GristmillError, ValueError):
    """A sample file line that is not a record."""


def _encoded(value: object) -> bytes | None:
    return None if value is None else json.dumps(value).encode()


def sample_messages(path: Path, topic: str) -> list[RawMessage]:
    """One record per line: its JSON value (`null` for a tombstone), or `{"key": ..., "value": ...}` for a keyed
    record (a line with exactly those two fields)."""
    messages = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSample(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidSample(f"{path}:{number}: not JSON: {exc.msg}") from None
        except (RecursionError, ValueError) as exc:
            raise InvalidSample(f"{path}:{number}: not readable JSON: {type(exc).__name__}") from None
        keyed = isinstance(data, dict) and data.keys() == {"key", "value"}
        key, value = (data["key"], data["value"]) if keyed else (None, data)
        messages.append(RawMessage(topic, 0, number, _encoded(key), _encoded(value), time.time()))
    return messages


def read_topic(settings: Settings, topic: str, limit: int, idle_s: float = 3.0) -> Iterator[RawMessage]:
    """Up to `limit` records from the start of `topic` (every partition), until none arrives for `idle_s`;
    nothing is committed."""
    consumer = Consumer({**kafka_config(settings), "group.id": f"gristmill-sources-check-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise TopicUnavailable(f"topic {topic}: {metadata.error}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        read, last = 0, time.monotonic()
        while time.monotonic() - last < idle_s and read < limit:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            last = time.monotonic()
            read += 1
            stamp = message.timestamp()[1]
            yield RawMessage(topic, message.partition(), message.offset(), message.key(), message.value(),
                             stamp / 1000 if stamp and stamp > 0 else None)
    finally:
        consumer.close()
