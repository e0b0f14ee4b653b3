"""Inspect the dead-letter topic and replay fixed records to the topics they came from."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from schemas import TOPIC_RECORDS, DeadLetter
from streams.produce import Outgoing, produce
from streams.settings import Settings
from streams.topics import TopicNames, read_from_start
from streams.validation import RawMessage, Rejected, validate_message

KEY_FIELDS = {"documents": "doc_id", "queries": "query_id", "feedback": "query_id"}


@dataclass
class Foreign:
    """Records on the dead-letter topic that are not dead letters (produced there by something else)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


def read_dead_letters(settings: Settings, idle_s: float = 2.0, limit: int | None = None,
                      foreign: Foreign | None = None) -> Iterator[DeadLetter]:
    """Every dead letter from the start of the topic, until none arrives for `idle_s` (or `limit` are read);
    records that are not dead letters are skipped and counted in `foreign`."""
    foreign = foreign if foreign is not None else Foreign()
    if limit is not None and limit <= 0:
        return
    read = 0
    with contextlib.closing(read_from_start(settings, TopicNames(settings.namespace).deadletter, "deadletter",
                                            idle_s)) as records:
        for message in records:
            if message.value() is None:
                continue
            try:
                letter = DeadLetter.model_validate_json(message.value())
            except ValidationError as exc:
                foreign.count += 1
                if len(foreign.examples) < 3:
                    foreign.examples.append(f"partition {message.partition()} offset {message.offset()}: "
                                            f"{exc.errors(include_url=False)[0]['msg']}")
                continue
            read += 1
            yield letter
            if limit is not None and read >= limit:
                return


def _raw(letter: DeadLetter, field: str) -> bytes | None:
    text = getattr(letter, field)
    if text is None:
        return None
    return base64.b64decode(text) if getattr(letter, f"{field}_encoding") == "base64" else text.encode("utf-8")


@dataclass(frozen=True)
class ReplayPlan:
    ready: list[tuple[str, Outgoing]]  # (physical topic, record)
    still_bad: list[tuple[int, str]]  # (line number, reasons)


def plan_replay(path: Path, settings: Settings) -> ReplayPlan:
    """Read dead letters (as `inspect --out` wrote them, values fixed by hand) and re-check each one."""
    names = TopicNames(settings.namespace)
    logical_by_physical = {names[logical]: logical for logical in TOPIC_RECORDS}
    ready: list[tuple[str, Outgoing]] = []
    still_bad: list[tuple[int, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            letter = DeadLetter.model_validate_json(line)
        except ValidationError as exc:
            still_bad.append((number, f"not a dead-letter record: {exc.errors()[0]['msg']}"))
            continue
        if letter.value_truncated:
            still_bad.append((number, f"truncated: only {len(letter.value or ''):,} of the value's "
                                      f"{letter.value_size or 0:,} bytes were kept; produce the corrected original "
                                      f"record instead (sha256 {letter.value_sha256})"))
            continue
        logical = logical_by_physical.get(letter.topic)
        if logical not in KEY_FIELDS:
            still_bad.append((number, f"cannot replay to {letter.topic!r}: not a user topic of this namespace"))
            continue
        key, value = _raw(letter, "key"), _raw(letter, "value")
        checked = validate_message(RawMessage(letter.topic, letter.partition, letter.offset, key, value),
                                   TOPIC_RECORDS[logical], KEY_FIELDS[logical])
        if isinstance(checked, Rejected):
            still_bad.append((number, "; ".join(f"{e.loc}: {e.msg}" for e in checked.errors)))
        else:
            ready.append((letter.topic, Outgoing(key, value or b"")))
    return ReplayPlan(ready, still_bad)


def replay(plan: ReplayPlan, settings: Settings) -> int:
    by_topic: dict[str, list[Outgoing]] = {}
    for topic, record in plan.ready:
        by_topic.setdefault(topic, []).append(record)
    return sum(produce(settings, topic, records).check().sent for topic, records in by_topic.items())


def write_jsonl(letters: list[DeadLetter], path: Path) -> None:
    path.write_text("".join(json.dumps(letter.model_dump(mode="json")) + "\n" for letter in letters),
                    encoding="utf-8")
