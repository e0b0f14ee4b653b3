"""API keys for the HTTP API (`GRISTMILL_API_KEYS_FILE`): who a bearer key belongs to, and what it may do.

The file is JSON, validated strictly:

    {"keys": [{"key": "<at least 16 visible ASCII characters>", "name": "alice",
               "principals": ["user:alice", "group:eng"], "roles": ["search", "read", "admin"]}]}

Roles: `search` (searches and document versions), `read` (the dashboard's data, evaluation, experiments, one
document's chunks, the full health report: the log's content, query texts included), `admin` (`/admin/*`).

Keys are compared as sha256 digests with `hmac.compare_digest`, against every known key whichever matches; they are
never logged, and an invalid file's error names the entry and field, never the value. The file is checked at most
once per `recheck_s` (inode, size, mtime) on a request and re-read when it changed, so a key is revoked by editing
the file, without a restart. A file that became unreadable or invalid **fails closed**: no key from it
authenticates (one warning is logged) until it is valid again; the last good set is not kept, so a half-written
revocation never leaves the revoked key working. `GRISTMILL_ADMIN_TOKEN`, when set, keeps working as a key with
every role (caller `admin-token`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from schemas.errors import GristmillError
from schemas.records import MAX_PRINCIPALS, Principal

log = logging.getLogger(__name__)

Role = Literal["search", "read", "admin"]
ROLES: tuple[Role, ...] = ("search", "read", "admin")
MIN_KEY_CHARS = 16



class InvalidApiKeysFile(GristmillError):
    """The API keys file is missing, unreadable, not JSON, or breaks the keys file's rules (the message says which
    entry and field, never a key)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as its key says: a name (for logs and errors), principals (what documents it may see),
    and roles (what it may do)."""

    name: str
    principals: frozenset[str]
    roles: frozenset[str]

    def may(self, role: Role) -> bool:
        return role in self.roles


ADMIN_TOKEN_CALLER = Caller("admin-token", frozenset(), frozenset(ROLES))


class ApiKeyEntry(BaseModel):
    """One key of the file."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)

    key: str = Field(min_length=MIN_KEY_CHARS, max_length=512, repr=False,
                     description="The bearer key: visible ASCII, no spaces.")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")
    principals: list[Principal] = Field(default_factory=list, max_length=MAX_PRINCIPALS,
                                       description="The principals documents' acls name (user:alice, group:eng).")
    roles: list[Role] = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _sendable(cls, key: str) -> str:
        if not all("\x21" <= char <= "\x7e" for char in key):
            raise ValueError("a key is visible ASCII characters only (no spaces): it is sent in a header")
        return key


class ApiKeysFile(BaseModel):
    """The whole file: names and keys are unique (an empty list is valid: no key authenticates)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)

    keys: list[ApiKeyEntry]

    @model_validator(mode="after")
    def _unique(self) -> ApiKeysFile:
        names: set[str] = set()
        owners: dict[str, str] = {}
        for entry in self.keys:
            if entry.name in names:
                raise ValueError(f"the name {entry.name!r} is given to more than one key")
            names.add(entry.name)
            if entry.key in owners:
                raise ValueError(f"the keys of {owners[entry.key]!r} and {entry.name!r} are the same")
            owners[entry.key] = entry.name
        return self


def _describe(error: ValidationError) -> str:
    """The first few problems, as `where: what` without the values (which may be keys)."""
    problems = [f"{'.'.join(str(part) for part in e['loc']) or 'file'}: {e['msg']}"
                for e in error.errors(include_url=False, include_input=False, include_context=False)]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def read_api_keys(path: Path) -> tuple[ApiKeyEntry, ...]:
    """The keys of a keys file (`InvalidApiKeysFile` with a one-line reason when it cannot be used)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidApiKeysFile(f"GRISTMILL_API_KEYS_FILE {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return tuple(ApiKeysFile.model_validate_json(raw).keys)
    except ValidationError as exc:
        raise InvalidApiKeysFile(f"GRISTMILL_API_KEYS_FILE {path} is invalid: {_describe(exc)}") from None


def bearer_token(header_value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none."""
    scheme, _, token = (header_value or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def _file_signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class ApiKeys:
    """The keys a worker accepts: those of the keys file (re-read when it changes) and the admin token.

    `enforced` is true when a keys file is configured: then every route but the open ones needs a key. Reading an
    invalid file at construction raises `InvalidApiKeysFile` (a worker must not start on a broken file); later it
    fails closed, as the module says."""

    def __init__(self, path: Path | None, admin_token: SecretStr | None = None, *, recheck_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._admin_digest = _digest(admin_token.get_secret_value()) if admin_token is not None else None
        self._recheck_s = recheck_s
        self._clock = clock
        self._known: tuple[tuple[bytes, Caller], ...] = ()
        self._signature: tuple[int, int, int, int] | None = None
        self._checked_at = clock()
        if path is not None:
            self._signature = _file_signature(path)
            self._known = self._digested(read_api_keys(path))

    @property
    def enforced(self) -> bool:
        return self.path is not None

    @property
    def admin_token_set(self) -> bool:
        return self._admin_digest is not None

    @staticmethod
    def _digested(entries: tuple[ApiKeyEntry, ...]) -> tuple[tuple[bytes, Caller], ...]:
        return tuple((_digest(e.key), Caller(e.name, frozenset(e.principals), frozenset(e.roles))) for e in entries)

    def refresh(self) -> None:
        """Re-read the keys file if it changed since the last look (at most once per `recheck_s`)."""
        if self.path is None or self._clock() - self._checked_at < self._recheck_s:
            return
        self._checked_at = self._clock()
        signature = _file_signature(self.path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self._known = self._digested(read_api_keys(self.path))
        except InvalidApiKeysFile as exc:
            self._known = ()
            log.warning("%s; no API key authenticates until the file is valid again", exc)
            return
        log.info("API keys file %s re-read: %d keys", self.path, len(self._known))

    def authenticate(self, header_value: str | None) -> Caller | None:
        """The caller an `Authorization` header's bearer key belongs to; None without a key or for an unknown one.
        Every known key is compared, in constant time, whichever matches."""
        token = bearer_token(header_value)
        if token is None:
            return None
        self.refresh()
        digest = _digest(token)
        found: Caller | None = None
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            found = ADMIN_TOKEN_CALLER
        for known_digest, caller in self._known:
            if hmac.compare_digest(digest, known_digest) and found is None:
                found = caller
        return found


def check_api_keys_file(path: Path) -> int:
    """How many keys a keys file holds (`InvalidApiKeysFile` when it cannot be used): `gristmill up` checks it
    before it starts anything."""
    return len(read_api_keys(path))

