"""Query-string parameters, parsed strictly at the edge (`InvalidParameter` otherwise): each given at most once,
integers as plain decimal digits, seconds finite and within bounds. The HTTP API and the CLI parse with these;
what a search carries is then checked by the `queries` contract itself (`schemas.QueryEvent`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from schemas import QueryEvent, validate_filter
from schemas.errors import GristmillError, InvalidFilter

DECIMAL_INTEGER = re.compile(r"-?[0-9]{1,19}")
DECIMAL_NUMBER = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


class InvalidParameter(GristmillError, ValueError):
    """A request parameter is repeated, malformed or out of range."""


def unique(params: Any, read: frozenset[str] | set[str]) -> dict[str, str]:
    """The parameters of a query string that the handler `read`s, as a dict; `InvalidParameter` if one of them is
    given more than once (which one counts would be a guess). Others (a cache buster, `utm_*`) are left alone."""
    keys = [key for key, _ in params.items() if key in read]  # a multidict's items() repeats a repeated key
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise InvalidParameter(f"parameter {repeated[0]!r} is given more than once")
    return {key: params[key] for key in keys}


def integer(text: str, name: str) -> int:
    """Plain decimal digits (no `1_000`, no spaces, no `+`)."""
    if not DECIMAL_INTEGER.fullmatch(text):
        raise InvalidParameter(f"{name} must be an integer, not {text[:40]!r}")
    return int(text)


SIGNED_NUMBER = re.compile(r"-?[0-9]{1,19}(\.[0-9]{1,12})?")


def number(text: str, name: str, whole: bool = False) -> float | int:
    """A plain decimal number, signed (`whole`: an integer of 64 bits); no exponents, `nan` or `inf`."""
    if not SIGNED_NUMBER.fullmatch(text) or (whole and "." in text):
        raise InvalidParameter(f"{name} must be {'an integer' if whole else 'a number'}, not {text[:40]!r}")
    if whole:
        value = int(text)
        if not -(2**63) <= value < 2**63:
            raise InvalidParameter(f"{name} must fit in 64 bits, not {text[:40]!r}")
        return value
    return float(text)


def seconds(text: str, name: str, low: float, high: float) -> float:
    """A plain decimal number of seconds from `low` to `high` (no `nan`, `inf` or exponents)."""
    if not DECIMAL_NUMBER.fullmatch(text):
        raise InvalidParameter(f"{name} must be a number of seconds like 3600 or 0.5, not {text[:40]!r}")
    return bounded(float(text), name, low, high)


def bounded(value: float, name: str, low: float, high: float) -> float:
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidParameter(f"{name} must be from {low:g} to {high:g} seconds, not {value!r}")
    return value


def valid_unicode(text: str, name: str) -> str:
    """`text` if it can be encoded (JSON lets a client send a lone surrogate, which no store or log can hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParameter(f"{name} holds a lone surrogate: not valid Unicode text") from None
    return text


def names(text: str, name: str, allowed: tuple[str, ...], empty: bool = False) -> list[str]:
    """A comma-separated list of some of `allowed` (none only if `empty`), each at most once."""
    parts = [part for part in text.split(",") if part]
    unknown = sorted(set(parts) - set(allowed))
    if (not parts and not empty) or unknown:
        raise InvalidParameter(f"{name} must name some of {', '.join(allowed)}; unknown: {unknown}")
    if len(set(parts)) != len(parts):
        raise InvalidParameter(f"{name} names {next(p for p in parts if parts.count(p) > 1)!r} twice")
    return parts


def search_request(fields: Mapping[str, Any], called: Mapping[str, str] | None = None) -> QueryEvent:
    """A search as the `queries` contract takes it (the HTTP API and the CLI check a search with this before they
    run or send it); `InvalidParameter` with the first reason otherwise, naming the field as the caller calls it
    (`called`: e.g. `top_k` is HTTP's `k`)."""
    filter_ = fields.get("filter")
    try:
        if isinstance(filter_, Mapping):
            validate_filter(filter_)  # its own message names the fields one can filter on
        return QueryEvent.model_validate({key: value for key, value in fields.items() if value is not None})
    except InvalidFilter as exc:
        raise InvalidParameter(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field, *inside = [str(part) for part in first["loc"]] or ["request"]
        where = ".".join([(called or {}).get(field, field), *inside])
        raise InvalidParameter(f"{where}: {first['msg']}") from None
