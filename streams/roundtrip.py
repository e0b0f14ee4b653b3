"""Queries through Kafka: produce to `queries`, collect the matching `responses` (used by `ask`, `eval`, bench)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer

from streams.settings import Settings
from streams.topics import TopicNames, kafka_config


@dataclass(frozen=True)
class Answer:
    response: dict[str, Any]
    round_trip_s: float


class QueryRoundTrip:
    """Subscribes to `responses` before sending, so no answer can slip past; matches answers by query_id."""

    def __init__(self, settings: Settings, assignment_timeout_s: float = 30.0) -> None:
        topics = TopicNames(settings.namespace)
        self._queries, responses = topics.queries, topics.responses
        config = kafka_config(settings)
        self._producer = Producer({**config, "linger.ms": 0, "acks": "all"})
        self._consumer = Consumer({**config, "group.id": f"gristmill-ask-{uuid.uuid4()}",
                                   "auto.offset.reset": "latest", "enable.auto.commit": False,
                                   "session.timeout.ms": 6000, "fetch.wait.max.ms": 10})
        self._consumer.subscribe([responses])
        deadline = time.monotonic() + assignment_timeout_s
        while not self._consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions of {responses} assigned in {assignment_timeout_s}s")
            self._consumer.poll(0.1)
        self._sent: dict[str, float] = {}
        self._answers: dict[str, Answer] = {}

    def send(self, text: str, top_k: int = 10, filter_: dict[str, Any] | None = None,
             query_id: str | None = None) -> str:
        query_id = query_id or f"ask-{uuid.uuid4()}"
        value = {"query_id": query_id, "text": text, "top_k": top_k, **({"filter": filter_} if filter_ else {})}
        self._sent[query_id] = time.perf_counter()
        self._producer.produce(self._queries, key=query_id.encode(), value=json.dumps(value).encode())
        self._producer.poll(0)
        return query_id

    def flush(self) -> None:
        self._producer.flush(30)

    def poll(self, timeout_s: float = 0.05) -> None:
        """Take whatever responses have arrived."""
        for message in self._consumer.consume(num_messages=500, timeout=timeout_s):
            if message.error() or message.value() is None:
                continue
            arrived = time.perf_counter()
            try:
                response = json.loads(message.value())
            except json.JSONDecodeError:
                continue
            query_id = response.get("query_id")
            if query_id in self._sent and query_id not in self._answers:
                self._answers[query_id] = Answer(response, arrived - self._sent[query_id])

    def wait(self, query_ids: Iterable[str], timeout_s: float) -> dict[str, Answer]:
        wanted = set(query_ids)
        self._producer.flush(timeout_s)
        deadline = time.monotonic() + timeout_s
        while not wanted <= self._answers.keys() and time.monotonic() < deadline:
            self.poll()
        missing = wanted - self._answers.keys()
        if missing:
            raise TimeoutError(f"{len(missing)} of {len(wanted)} queries unanswered after {timeout_s}s")
        return {query_id: self._answers[query_id] for query_id in wanted}

    def close(self) -> None:
        self._producer.flush(10)
        self._consumer.close()

    def __enter__(self) -> QueryRoundTrip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
