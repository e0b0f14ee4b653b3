"""Errors of the ML state (index, model registry); all derive from `GristmillError`."""

from __future__ import annotations

from schemas.errors import GristmillError


class StoreError(GristmillError):
    """A vector store operation failed (an outage or timeout: the caller retries it with backoff)."""


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


class NoExperiment(GristmillError, LookupError):
    """No experiment of this model is live."""
