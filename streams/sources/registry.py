"""Schema-registry framed records: the Confluent wire format (magic byte 0, a 4-byte schema id, then the Avro or
JSON Schema payload), read through confluent-kafka's schema-registry client and deserializers.

Schemas are fetched before a batch is checked (`fetch`, off the event loop, retried while the registry is away, so
a registry outage holds the source back instead of dead-lettering its records); decoding then reads them from the
client's cache. A schema id the registry does not know, or a payload its schema cannot read, is the record's fault:
`Undecodable`, a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any, Literal

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from schemas.errors import GristmillError
from streams.settings import Settings
from streams.sources.changes import Undecodable

log = logging.getLogger(__name__)
Kind = Literal["avro", "json-schema"]
MAGIC = 0


def registry_client(settings: Settings) -> SchemaRegistryClient | None:
    """The client `GRISTMILL_SCHEMA_REGISTRY_URL` (and its credentials) name; None when unset. A `mock://` URL is
    confluent-kafka's in-memory registry (tests)."""
    if not settings.schema_registry_url:
        return None
    conf: dict[str, Any] = {"url": settings.schema_registry_url}
    if settings.schema_registry_username:
        password = settings.schema_registry_password.get_secret_value() if settings.schema_registry_password else ""
        conf["basic.auth.user.info"] = f"{settings.schema_registry_username}:{password}"
    return SchemaRegistryClient.new_client(conf)


def schema_id(raw: bytes | None) -> int | None:
    """The schema id of a wire-framed payload; None for anything else."""
    if raw is None or len(raw) < 5 or raw[0] != MAGIC:
        return None
    return int(struct.unpack(">I", raw[1:5])[0])


class RegistryUnavailable(GristmillError):
    """The schema registry did not answer (or refused gristmill's credentials): not the record's fault."""


def _is_unknown(exc: SchemaRegistryError) -> bool:
    """The registry answered that it has no such schema (401/403/429 and 5xx are the registry's trouble)."""
    return exc.http_status_code == 404


class RegistryDecoder:
    """Reads one source topic's wire-framed keys and values."""

    def __init__(self, client: SchemaRegistryClient, kind: Kind, topic: str) -> None:
        self.client = client
        self.kind = kind
        self.topic = topic
        self._value = self._deserializer()
        self._key = self._deserializer()
        self._known: set[int] = set()
        self._unknown: set[int] = set()

    def _deserializer(self) -> Callable[[bytes, SerializationContext], Any]:
        if self.kind == "avro":
            return AvroDeserializer(self.client)
        return JSONDeserializer(None, schema_registry_client=self.client)

    async def fetch(self, raws: Iterable[bytes | None], retry_max_s: float = 10.0) -> None:
        """Fetch the schemas `raws` name that are not known yet; wait out a registry that is away (ids it answers
        it does not know are remembered as unknown)."""
        missing = {i for raw in raws if (i := schema_id(raw)) is not None} - self._known - self._unknown
        delay = 0.2
        for wanted in sorted(missing):
            while True:
                try:
                    await asyncio.to_thread(self.client.get_schema, wanted)
                except SchemaRegistryError as exc:
                    if _is_unknown(exc):
                        self._unknown.add(wanted)
                        break
                    problem: Exception = exc
                except Exception as exc:  # the registry unreachable: its client's transport errors
                    problem = exc
                else:
                    self._known.add(wanted)
                    break
                log.warning("schema registry unavailable fetching schema %d for %s (retrying in %.1fs): %s",
                            wanted, self.topic, delay, problem)
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry_max_s)

    def ready(self, *raws: bytes | None) -> bool:
        """Whether decoding `raws` needs nothing from the registry (every schema they name fetched, or known to be
        unknown)."""
        return all((i := schema_id(raw)) is None or i in self._known or i in self._unknown for raw in raws)

    def decode(self, raw: bytes | None, field: Literal["key", "value"]) -> Any:
        """The decoded key or value; None stays None (a tombstone). A key that is not wire-framed is read as JSON or
        as a plain string by the caller."""
        if raw is None:
            return None
        found = schema_id(raw)
        if found is None:
            raise Undecodable(field, "not in the schema registry's wire format (magic byte 0 and a schema id)")
        if found in self._unknown:
            raise Undecodable(field, f"schema id {found} is unknown to the schema registry")
        context = SerializationContext(self.topic, MessageField.KEY if field == "key" else MessageField.VALUE)
        try:
            return (self._key if field == "key" else self._value)(raw, context)
        except SchemaRegistryError as exc:
            if _is_unknown(exc):
                raise Undecodable(field, f"schema id {found} is unknown to the schema registry") from None
            raise RegistryUnavailable(f"schema registry: {exc}") from exc
        except (SerializationError, ValueError, TypeError, IndexError, KeyError, EOFError, OverflowError,
                RecursionError) as exc:  # framing, a payload its schema cannot read, or one it does not allow
            raise Undecodable(field, f"the {self.kind} payload (schema id {found}) cannot be read: "
                                     f"{type(exc).__name__}: {str(exc)[:200]}") from None
        except Exception as exc:  # the client's transport: a schema it fetches while decoding (a reference)
            raise RegistryUnavailable(f"schema registry: {type(exc).__name__}: {exc}") from exc
