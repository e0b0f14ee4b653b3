"""What a user writes instead of gristmill: a consume -> encode -> upsert -> commit loop with confluent-kafka,
sentence-transformers (PyTorch) and qdrant-client's local mode, one record at a time or 64 at a time."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def produce_texts(bootstrap: str, topic: str, texts: Sequence[str], partitions: int = 4) -> None:
    """A fresh topic holding one document event per text."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, text in enumerate(texts):
        producer.produce(topic, key=f"n{i}".encode(), value=json.dumps(
            {"doc_id": f"n{i}", "version": 1, "op": "upsert", "text": text}).encode())
        producer.poll(0)
    producer.flush(60)


def naive_loop(bootstrap: str, topic: str, count: int, batch: int, model: Any) -> float:
    """Consume `count` records `batch` at a time, encode their texts with `model` (a SentenceTransformer), upsert
    them into qdrant-client's local mode, commit after each batch; documents per second from the first record
    consumed to the last commit."""
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    client = QdrantClient(location=":memory:")
    client.create_collection("docs", vectors_config=qm.VectorParams(
        size=model.get_embedding_dimension(), distance=qm.Distance.COSINE))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"naive-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    done, started = 0, None
    try:
        while done < count:
            messages = [m for m in consumer.consume(num_messages=batch, timeout=1.0) if not m.error()]
            if not messages:
                continue
            started = started or time.perf_counter()
            events = [json.loads(m.value()) for m in messages]
            vectors = model.encode([e["text"] for e in events], batch_size=32)
            client.upsert("docs", [qm.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, e["doc_id"])),
                                                  vector=vector.tolist(), payload=e)
                                   for e, vector in zip(events, vectors, strict=True)])
            consumer.commit(asynchronous=False)
            done += len(events)
    finally:
        consumer.close()
    return count / (time.perf_counter() - (started or time.perf_counter()))
