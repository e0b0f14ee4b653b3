"""Queries through Kafka: produce to `queries`, collect the matching `responses` (used by `ask`, `eval`, bench)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from streams.errors import TopicUnavailable
from streams.settings import Settings
from streams.topics import PARTITIONER, TopicNames, kafka_config

END_LOOKUP_S = 2.0


@dataclass(frozen=True)
class Answer:
    response: dict[str, Any]
    round_trip_s: float


class QueryRoundTrip:
    """Reads every partition of `responses` from its current end before sending anything, so no answer can
    slip past; matches answers by query_id. Partitions are assigned directly (no consumer group to join).
    """

    def __init__(self, settings: Settings, setup_timeout_s: float = 30.0) -> None:
        topics = TopicNames(settings.namespace)
        self._queries, responses = topics.queries, topics.responses
        config = kafka_config(settings)
        self._producer = Producer({**config, **PARTITIONER, "linger.ms": 0, "acks": "all"})
        self._consumer = Consumer({**config, "group.id": f"gristmill-ask-{uuid.uuid4()}",
                                   "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        metadata = self._consumer.list_topics(responses, timeout=setup_timeout_s).topics[responses]
        if metadata.error is not None:
            raise TopicUnavailable(f"topic {responses}: {metadata.error}")
        self._consumer.assign([TopicPartition(responses, p, OFFSET_END) for p in metadata.partitions])
        deadline = time.monotonic() + min(setup_timeout_s, END_LOOKUP_S)
        positions = self._consumer.position(self._consumer.assignment())
        while any(tp.offset < 0 for tp in positions) and time.monotonic() < deadline:
            self._consumer.poll(0.02)
            positions = self._consumer.position(self._consumer.assignment())
        # A partition whose end the broker does not report (Tansu, for an empty one) is read from its start:
        # slower at worst, never a missed answer.
        self._consumer.assign([
            TopicPartition(responses, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            for tp in positions])
        self._sent: dict[str, float] = {}
        self._answers: dict[str, Answer] = {}

    def send(self, text: str, top_k: int = 10, filter_: dict[str, Any] | None = None,
             query_id: str | None = None, mode: str | None = None, group: str = "chunk",
             user_id: str | None = None, segment: str | None = None,
             principals: list[str] | None = None) -> str:
        """Produce one query (`principals`: whom it is asked for; None: public documents only)."""
        query_id = query_id or f"ask-{uuid.uuid4()}"
        value = {"query_id": query_id, "text": text, "top_k": top_k, **({"filter": filter_} if filter_ else {}),
                 **({"mode": mode} if mode else {}), **({"group": group} if group != "chunk" else {}),
                 **({"user_id": user_id} if user_id else {}), **({"segment": segment} if segment else {}),
                 **({"principals": principals} if principals is not None else {})}
        self._sent[query_id] = time.perf_counter()
        self._producer.produce(self._queries, key=query_id.encode(), value=json.dumps(value).encode())
        self._producer.poll(0)
        return query_id

    def flush(self) -> None:
        self._producer.flush(30)

    def poll(self, timeout_s: float = 0.05) -> None:
        """Wait up to `timeout_s` for a response, then take whatever else has arrived."""
        first = self._consumer.poll(timeout_s)
        if first is None:
            return
        for message in [first, *self._consumer.consume(num_messages=500, timeout=0)]:
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
