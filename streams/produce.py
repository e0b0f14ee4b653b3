"""Turn files into `documents` events and produce them: JSONL events, BEIR `corpus.jsonl`, or text folders."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from schemas import Record
from streams.errors import DeliveryFailed
from streams.settings import Settings
from streams.topics import TopicNames, kafka_config

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce: key and value bytes as they go on the wire."""

    key: bytes | None
    value: bytes


def _event(doc_id: str, version: int, text: str, title: str | None, source: str) -> Outgoing:
    value = {"doc_id": doc_id, "version": version, "op": "upsert", "text": text, "source": source}
    if title:
        value["title"] = title
    return Outgoing(doc_id.encode(), json.dumps(value, ensure_ascii=False).encode())


def _jsonl_line(line: bytes, version: int) -> Outgoing:
    """A document event is sent as written (the pipeline validates it); a BEIR row becomes an upsert."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return Outgoing(None, line)  # the worker dead-letters it with the reason
    if isinstance(row, dict) and "_id" in row and "doc_id" not in row:
        return _event(str(row["_id"]), version, str(row.get("text", "")), row.get("title") or None, "beir")
    key = row.get("doc_id") if isinstance(row, dict) else None
    return Outgoing(key.encode() if isinstance(key, str) else None, line)


def _folder_file(root: Path, path: Path, version: int) -> Outgoing:
    text = path.read_text(encoding="utf-8", errors="replace")
    title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
    return _event(path.relative_to(root).as_posix(), version, text, title, "files")


def read_documents(path: Path, version: int | None = None) -> tuple[int, Iterator[Outgoing]]:
    """(count, records) for a JSONL file of events, a BEIR corpus.jsonl, or a folder of text files.

    Files without versions get `version` (default: now in milliseconds, so a re-import supersedes).
    """
    version = int(time.time() * 1000) if version is None else version
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no {sorted(TEXT_SUFFIXES)} files")
        return len(files), (_folder_file(path, p, version) for p in files)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is neither a JSONL file nor a folder")
    with path.open("rb") as handle:
        count = sum(1 for line in handle if line.strip())

    def lines() -> Iterator[Outgoing]:
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield _jsonl_line(line.rstrip(b"\r\n"), version)

    return count, lines()


def produce_record(settings: Settings, logical_topic: str, key: str, record: Record) -> None:
    """Produce one record to a public topic of the configured namespace and wait until the broker has it."""
    value = record.model_dump_json(exclude_none=True).encode()
    produce(settings, TopicNames(settings.namespace)[logical_topic], iter([Outgoing(key.encode(), value)]))


def produce(settings: Settings, topic: str, records: Iterator[Outgoing],
            on_sent: Callable[[int], None] | None = None) -> int:
    """Produce records, wait for every delivery, and raise if any failed."""
    producer = Producer({**kafka_config(settings), "linger.ms": 5, "acks": "all",
                         "message.max.bytes": 4_000_000})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    sent = 0
    for record in records:
        while True:
            try:
                producer.produce(topic, key=record.key, value=record.value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                failures.append(str(exc))
                break
        sent += 1
        producer.poll(0)
        if on_sent:
            on_sent(1)
    remaining = producer.flush(60)
    if remaining or failures:
        raise DeliveryFailed(f"{len(failures) + remaining} of {sent} records were not delivered: {failures[:3]}")
    return sent
