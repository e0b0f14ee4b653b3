"""Errors of the runtime (Kafka, the embedded broker, producing); all derive from `GristmillError`."""

from __future__ import annotations

from schemas.errors import GristmillError


class NoKafka(GristmillError):
    """No Kafka is configured and no stack is running."""


class TopicUnavailable(GristmillError):
    """A topic gristmill needs does not exist or cannot be read."""


class DeliveryFailed(GristmillError):
    """Records were not delivered to the broker."""


class BrokerFailed(GristmillError):
    """The embedded broker did not start."""
