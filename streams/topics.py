"""Topic names (namespaced), their configs, and explicit creation through the Kafka admin API."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import TOPIC_RECORDS
from streams.errors import NoKafka, TopicUnavailable
from streams.settings import Settings

#: Topics whose records are kept compacted (latest per key) instead of by time.
COMPACTED = {"model-updates"}
#: Internal topics kept only briefly (what they say is stale within seconds), with their retention in ms.
SHORT_LIVED = {"index-changes": 3_600_000}


@dataclass(frozen=True)
class TopicNames:
    """The physical name of each public topic under one namespace."""

    namespace: str = ""

    def __getitem__(self, logical: str) -> str:
        if logical not in TOPIC_RECORDS:
            raise KeyError(f"unknown topic {logical!r}; known: {sorted(TOPIC_RECORDS)}")
        return f"{self.namespace}.{logical}" if self.namespace else logical

    @property
    def documents(self) -> str:
        return self["documents"]

    @property
    def queries(self) -> str:
        return self["queries"]

    @property
    def feedback(self) -> str:
        return self["feedback"]

    @property
    def responses(self) -> str:
        return self["responses"]

    @property
    def deadletter(self) -> str:
        return self["deadletter"]

    def all(self) -> list[str]:
        return [self[name] for name in TOPIC_RECORDS]


#: librdkafka's partitioner that matches the Java client's and aiokafka's (the workers'): a key lands on the same
#: partition whichever client produced it, so records about one entity (or one model) stay in order.
PARTITIONER = {"partitioner": "murmur2_random"}


def kafka_config(settings: Settings) -> dict[str, str | int]:
    """librdkafka settings shared by gristmill's admin clients, producers and consumers (TLS/SASL included)."""
    if not settings.kafka_bootstrap_servers:
        raise NoKafka("no Kafka: set KAFKA_BOOTSTRAP_SERVERS or start the stack with `gristmill up`")
    config: dict[str, str | int] = {"bootstrap.servers": settings.kafka_bootstrap_servers,
                                    "socket.timeout.ms": 10_000,
                                    "security.protocol": settings.kafka_security_protocol.lower()}
    if settings.kafka_security_protocol.startswith("SASL"):
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username or ""
        password = settings.kafka_sasl_password
        config["sasl.password"] = password.get_secret_value() if password else ""
    for key, path in (("ssl.ca.location", settings.kafka_ssl_cafile),
                      ("ssl.certificate.location", settings.kafka_ssl_certfile),
                      ("ssl.key.location", settings.kafka_ssl_keyfile)):
        if path is not None:
            config[key] = str(path)
    return config


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the configured security protocol (None without TLS)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(str(settings.kafka_ssl_certfile),
                                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None)
    return context


def faust_credentials(settings: Settings) -> object | None:
    """The same TLS/SASL settings for faust (aiokafka); None for PLAINTEXT."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        return faust.SASLCredentials(username=settings.kafka_sasl_username or "", password=password,
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context)


def aiokafka_security(settings: Settings) -> dict[str, object]:
    """The same TLS/SASL settings as keyword arguments of an aiokafka client."""
    options: dict[str, object] = {"security_protocol": settings.kafka_security_protocol,
                                  "ssl_context": kafka_ssl_context(settings)}
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username or "", sasl_plain_password=password)
    return options


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every public topic that does not exist yet; return the names created."""
    admin = AdminClient(kafka_config(settings))
    names = TopicNames(settings.namespace)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    wanted = []
    for logical in TOPIC_RECORDS:
        if names[logical] in existing:
            continue
        config = {"cleanup.policy": "compact"} if logical in COMPACTED else {}
        if logical in SHORT_LIVED:
            config["retention.ms"] = str(SHORT_LIVED[logical])
        wanted.append(
            NewTopic(names[logical], settings.partitions, settings.replication_factor, config=config)
        )
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def read_from_start(settings: Settings, topic: str, reader: str, idle_s: float) -> Iterator[Message]:
    """Every record of `topic` from the start of each partition, until none arrives for `idle_s`, read by a group of
    its own (`gristmill-READER-…`) that commits nothing; close the iterator to stop early."""
    consumer = Consumer({**kafka_config(settings), "group.id": f"gristmill-{reader}-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise TopicUnavailable(f"topic {topic}: {metadata.error}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            last = time.monotonic()
            yield message
    finally:
        consumer.close()
