"""Records to try a mapping on (`gristmill sources check`): from a sample file, or read from the topic itself."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import GristmillError
from streams.settings import Settings
from streams.topics import read_from_start
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
    with contextlib.closing(read_from_start(settings, topic, "sources-check", idle_s)) as records:
        for message in itertools.islice(records, limit):
            stamp = message.timestamp()[1]
            yield RawMessage(topic, message.partition(), message.offset(), message.key(), message.value(),
                             stamp / 1000 if stamp and stamp > 0 else None)
