"""Errors of the ML state (index, model registry); all derive from `GristmillError`."""

from __future__ import annotations

from schemas.errors import GristmillError


class StoreError(GristmillError):
    """A store operation failed (an outage or timeout: the caller retries it with backoff). `store` names the store
    (`/health` lists the stores failing now)."""

    store = "vector store"


class StateUnavailable(StoreError):
    """The query log, the feedback state or the evaluation store cannot be used now (locked past the busy timeout,
    an I/O error, a full or read-only volume, a database server away): retried like any store outage."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(message)
        self.store = store


class SqliteTooOld(GristmillError):
    """The Python's SQLite library is older than the state stores' SQL needs."""


class StateSchemaTooNew(GristmillError):
    """A state store's schema was migrated by a newer release of gristmill (waiting does not help: upgrade)."""


class RequestTooLarge(GristmillError):
    """The vector store refused a request as too large (HTTP 413, from Qdrant or a proxy in front of it). Not a
    `StoreError`: sending the same request again cannot succeed, so it is never retried as an outage."""


class PointTooLarge(RequestTooLarge):
    """Points that fit no request to the vector store: over `GRISTMILL_QDRANT_REQUEST_MAX_BYTES` by their estimated
    JSON size, or refused alone with HTTP 413. A failure of the records they belong to (dead letters), raised after
    every other point of the write was stored; `doc_ids` names their documents."""

    def __init__(self, message: str, doc_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.doc_ids = doc_ids


class UnsupportedSearchMode(GristmillError, ValueError):
    """The collection cannot answer this search mode (it predates sparse vectors: `gristmill reindex`)."""


class UnknownModelVersion(GristmillError, LookupError):
    """The registry holds no such model version."""


class NothingToRollBack(GristmillError):
    """Only one model version has ever served: there is no previous one."""


class ModelExportUnavailable(GristmillError):
    """No model is registered yet and the exporter (the `[train]` extra) is not installed."""


class ExperimentConflict(GristmillError):
    """An experiment of this model is already live (one at a time), or the id was used before."""


class CandidateServes(ExperimentConflict):
    """The version asked to challenge serving is the one serving, or the one a rollout is making serve (a promotion
    or `gristmill reindex`): an experiment of it would compare a version with itself."""

    def __init__(self, version: str, why: str) -> None:
        super().__init__(f"{version} {why}: an experiment needs another version")
        self.version, self.why = version, why


class NoExperiment(GristmillError, LookupError):
    """No experiment of this model is live."""


class PointerMoved(GristmillError):
    """The registry's serving pointer is not at the version the caller expected to replace (another decision moved
    it first): the compare-and-set refused to move it."""

    def __init__(self, version: str, expected: str | None, actual: str | None) -> None:
        super().__init__(f"refused to make {version} serve: expected {expected} to serve, but {actual} does")
        self.version, self.expected, self.actual = version, expected, actual


class RegistryWriteFailed(GristmillError):
    """The registry's pointer or history could not be written (a read-only or full volume)."""


class OperationAborted(GristmillError):
    """A long store operation (encoding and writing a batch) stopped early because the worker is stopping; nothing
    of the unfinished part was written, and its records are re-delivered."""
