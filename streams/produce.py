"""Turn files into `documents` events and produce them: JSONL events, BEIR `corpus.jsonl`, or text folders."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from schemas import Record
from schemas.records import MAX_TEXT_CHARS
from streams.errors import DeliveryFailed
from streams.settings import Settings
from streams.topics import PARTITIONER, TopicNames, kafka_config

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


@dataclass(frozen=True, slots=True)
class Skipped:
    """An input that was not sent, and why."""

    what: str
    reason: str


class DocumentSource:
    """`documents` events from a JSONL file of events, a BEIR corpus.jsonl, or a folder of text files.

    Files without versions get `version` (default: now in milliseconds, so a re-import supersedes). A folder's files
    are sent as documents only when they are UTF-8 text of at most MAX_TEXT_CHARS characters and, unless
    `follow_symlinks`, when they lie inside the folder (a symlink out of it is skipped); what is skipped is listed
    in `skipped` as the records are read.
    """

    def __init__(self, path: Path, version: int | None = None, follow_symlinks: bool = False) -> None:
        self.path = path
        self.version = int(time.time() * 1000) if version is None else version
        self.follow_symlinks = follow_symlinks
        self.skipped: list[Skipped] = []
        if path.is_dir():
            self._files = self._folder_files()
            if not self._files and not self.skipped:
                raise ValueError(f"{path} holds no {sorted(TEXT_SUFFIXES)} files")
            self.count = len(self._files)
        elif path.is_file():
            with path.open("rb") as handle:
                self.count = sum(1 for line in handle if line.strip())
        else:
            raise FileNotFoundError(f"{path} is neither a JSONL file nor a folder")

    def _folder_files(self) -> list[Path]:
        root = self.path.resolve()
        files = []
        for folder, _, names in os.walk(self.path, followlinks=self.follow_symlinks):
            for name in sorted(names):
                path = Path(folder) / name
                if path.suffix.lower() not in TEXT_SUFFIXES:
                    continue
                if not self.follow_symlinks and not path.resolve().is_relative_to(root):
                    self.skipped.append(Skipped(str(path), "a symlink out of the folder (--follow-symlinks sends it)"))
                elif path.is_file():
                    files.append(path)
        return sorted(files)

    def records(self) -> Iterator[Outgoing]:
        if self.path.is_dir():
            for path in self._files:
                record = self._folder_file(path)
                if record is not None:
                    yield record
            return
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield _jsonl_line(line.rstrip(b"\r\n"), self.version)

    def _folder_file(self, path: Path) -> Outgoing | None:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            self.skipped.append(Skipped(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
            return None
        except OSError as exc:
            self.skipped.append(Skipped(str(path), f"unreadable: {exc.strerror or exc}"))
            return None
        if len(text) > MAX_TEXT_CHARS:
            self.skipped.append(Skipped(str(path), f"{len(text):,} characters; a document holds at most "
                                                   f"{MAX_TEXT_CHARS:,}"))
            return None
        if not text.strip():
            self.skipped.append(Skipped(str(path), "empty"))
            return None
        title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
        return _event(path.relative_to(self.path).as_posix(), self.version, text, title, "files")


@dataclass
class Delivery:
    """What producing did: records the broker has, and why the others were not delivered."""

    sent: int = 0
    failed: list[str] = field(default_factory=list)

    def check(self) -> Delivery:
        """This delivery, or `DeliveryFailed` if any record was not delivered."""
        if self.failed:
            raise DeliveryFailed(f"{len(self.failed)} of {self.sent + len(self.failed)} records were not delivered: "
                                 f"{self.failed[:3]}")
        return self


def produce_record(settings: Settings, logical_topic: str, key: str, record: Record) -> None:
    """Produce one record to a public topic of the configured namespace and wait until the broker has it."""
    value = record.model_dump_json(exclude_none=True).encode()
    produce(settings, TopicNames(settings.namespace)[logical_topic], [Outgoing(key.encode(), value)]).check()


def produce(settings: Settings, topic: str, records: Iterable[Outgoing],
            on_sent: Callable[[int], None] | None = None) -> Delivery:
    """Produce records and wait for every delivery; a record the client or the broker refuses (too large, say) is
    counted in `failed` with the reason, the others are sent."""
    producer = Producer({**kafka_config(settings), **PARTITIONER, "linger.ms": 5, "acks": "all",
                         "message.max.bytes": 4_000_000})
    delivery = Delivery()

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            delivery.failed.append(str(err))
        else:
            delivery.sent += 1

    for record in records:
        while True:
            try:
                producer.produce(topic, key=record.key, value=record.value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                delivery.failed.append(f"{exc.args[0].str() if exc.args else exc} ({len(record.value):,} bytes)")
                break
        producer.poll(0)
        if on_sent:
            on_sent(1)
    remaining = producer.flush(60)
    if remaining:
        delivery.failed += ["not delivered within 60 s"] * remaining
    return delivery
