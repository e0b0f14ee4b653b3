"""The root of gristmill's typed errors, and the errors of the record contracts themselves.

Every error gristmill raises on purpose derives from `GristmillError`; callers (the HTTP API, the CLI) choose
their answer by type, never by message text.
"""

from __future__ import annotations


class GristmillError(Exception):
    """Root of every error gristmill raises on purpose."""


class InvalidFilter(GristmillError, ValueError):
    """A search filter names a field that cannot be filtered on, or gives it a value of the wrong type."""
