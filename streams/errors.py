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


class Unfinished(GristmillError):
    """Processing could not finish for a reason outside the records themselves (the worker is stopping while the
    store or the broker is unavailable): the batch is withheld and re-delivered later, never dead-lettered."""


class PublishAborted(Unfinished):
    """The worker is stopping while records it produces cannot be delivered."""


class RecordTooLarge(GristmillError):
    """A record does not fit the producer's size limit (a failure of that record, not of the broker)."""
