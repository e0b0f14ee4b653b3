"""What protects the HTTP API from clients it should not serve: a Host/Origin allow-list (DNS rebinding, cross-site
requests), API keys and the role each route needs (`access_guard`, `ROUTE_ROLES`), a deadline for request headers
(slow clients holding connections), and one for request bodies.

Idle keep-alive connections are closed by aiohttp's own `keepalive_timeout`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_runner import BaseSite

from streams.web.api_keys import ApiKeys, Caller, Role

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The role each route needs when a keys file is configured, by (method, path as the OpenAPI names it); None: open
#: to anyone. HEAD is GET's. A route missing here needs `admin` (a new route is never open by mistake). `/health`
#: is open as a liveness check but answers only its status without a `read` key (`HEALTH_DETAIL_ROLE`).
ROUTE_ROLES: Mapping[tuple[str, str], Role | None] = {
    ("GET", "/search"): "search",
    ("POST", "/search"): "search",
    ("POST", "/documents/versions"): "search",
    ("GET", "/documents/{doc_id}"): "read",
    ("GET", "/api/dashboard"): "read",
    ("GET", "/evaluation"): "read",
    ("GET", "/experiment"): "read",
    ("POST", "/admin/promote"): "admin",
    ("POST", "/admin/rollback"): "admin",
    ("POST", "/admin/experiment"): "admin",
    ("POST", "/admin/experiment/{action}"): "admin",
    ("GET", "/"): None,  # the page itself holds no data; it asks for a key
    ("GET", "/health"): None,
    ("GET", "/metrics"): None,  # counts and versions, never query text
    ("GET", "/openapi.json"): None,
}
HEALTH_DETAIL_ROLE: Role = "read"
#: request[CALLER_KEY]: the `Caller` a valid key belongs to, None for an anonymous request (`caller_of`).
CALLER_KEY: web.RequestKey[Caller | None] = web.RequestKey("caller")


class BadRequestBody(ValueError):
    """The request body is missing, too slow, or not the JSON expected (the message says which)."""


def allowed_host(host: str, names: frozenset[str]) -> bool:
    """A Host or Origin name this API answers: an IP address (a DNS-rebinding attacker needs a name it controls),
    a loopback name, or one of `names` (`*` allows every name)."""
    name = host.strip().lower().rstrip(".")
    if not name:
        return False
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return name in LOOPBACK_NAMES or name in names or "*" in names


def loopback_host(host: str) -> bool:
    """Whether binding `host` serves this machine only: a loopback address or name (empty binds every address)."""
    name = host.strip().lower().rstrip(".")
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return name in LOOPBACK_NAMES


def host_name(authority: str) -> str:
    """`example.org` from `example.org:6066`, `::1` from `[::1]:6066`."""
    return urlsplit(f"//{authority}").hostname or ""


def host_guard(names: Iterable[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware refusing (403) a request whose Host, or Origin when a browser sends one, is not allowed."""
    allowed = frozenset(n.strip().lower() for n in names if n.strip())

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        host = host_name(request.headers.get("Host", ""))
        if not allowed_host(host, allowed):
            return web.json_response({"error": f"host {host or '(none)'!r} is not served here; allow it with "
                                               "GRISTMILL_HTTP_ALLOWED_HOSTS"}, status=403)
        origin = request.headers.get("Origin")
        if origin is not None and (origin.strip().lower() == "null"
                                   or not allowed_host(urlsplit(origin).hostname or "", allowed)):
            return web.json_response({"error": f"requests from origin {origin[:100]!r} are not allowed"}, status=403)
        return await handler(request)
    return guard


def route_role(request: web.Request) -> Role | None:
    """The role the request's route needs (`ROUTE_ROLES`); `admin` for a route the table does not name."""
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method
    return ROUTE_ROLES.get((method, resource.canonical), "admin") if resource is not None else None


def caller_of(request: web.Request) -> Caller | None:
    """Who sent the request, when it carried a valid key (set by `access_guard`)."""
    return request.get(CALLER_KEY)


def _unauthorized(message: str, invalid: bool) -> web.Response:
    challenge = 'Bearer realm="gristmill"' + (', error="invalid_token"' if invalid else "")
    return web.json_response({"error": message}, status=401, headers={"WWW-Authenticate": challenge})


def access_guard(keys: ApiKeys) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware checking the bearer key against the role the route needs (`ROUTE_ROLES`) and attaching the
    caller to the request (`caller_of`): 401 without a key or with an unknown one, 403 with a key lacking the role.

    Without a keys file only `admin` routes need a key (the admin token; 403 while none is set); other routes stay
    open, as a loopback-only API always was. With one, a request for a path no route serves needs a valid key too
    (its 404 or 405 says nothing to a stranger)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        caller = keys.authenticate(header)
        request[CALLER_KEY] = caller
        routed = request.match_info.route.resource is not None
        role = route_role(request)
        if not keys.enforced and role != "admin":
            return await handler(request)
        if not keys.enforced and not keys.admin_token_set:
            return web.json_response({"error": "admin actions are disabled: set GRISTMILL_API_KEYS_FILE (a key with "
                                               "the admin role) or GRISTMILL_ADMIN_TOKEN"}, status=403)
        if role is None and routed:
            return await handler(request)
        if caller is None:
            if header is None or not header.strip():
                return _unauthorized("an API key is required: send Authorization: Bearer <key>", invalid=False)
            return _unauthorized("the API key was not recognized", invalid=True)
        if role is not None and not caller.may(role):
            return web.json_response({"error": f"the key {caller.name!r} lacks the {role!r} role"}, status=403)
        return await handler(request)
    return guard


async def read_json(request: web.Request, timeout_s: float) -> Any:
    """The request's JSON body, read within `timeout_s` (`BadRequestBody` otherwise)."""
    try:
        raw = await asyncio.wait_for(request.read(), timeout_s)
    except TimeoutError as exc:
        raise BadRequestBody(f"the request body did not arrive within {timeout_s:.0f}s") from exc
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestBody("body must be JSON") from exc


class HeaderDeadline(asyncio.Protocol):
    """Wraps aiohttp's connection handler: a request whose headers have not arrived whole `timeout_s` after their
    first byte (or after the connection opened) closes the connection."""

    by_handler: dict[int, HeaderDeadline] = {}  # id of aiohttp's handler (it has no weak references) -> wrapper

    def __init__(self, inner: Any, timeout_s: float) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting = True  # the next bytes begin a request's headers
        self._tail = b""
        HeaderDeadline.by_handler[id(inner)] = self

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._awaiting and self.transport is not None:
            self.transport.close()

    def expect_headers(self) -> None:
        """A response was sent: the next bytes on this connection start another request."""
        self._awaiting, self._tail = True, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._awaiting:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._awaiting = False
                self._disarm()
            else:
                self._tail = seen[-3:]
                self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        HeaderDeadline.by_handler.pop(id(self.inner), None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


@web.middleware
async def headers_expected_next(request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """After each request, the connection's next bytes are another request's headers, under the deadline again."""
    try:
        return await handler(request)
    finally:
        deadline = HeaderDeadline.by_handler.get(id(request.protocol))
        if deadline is not None:
            deadline.expect_headers()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections get a header deadline."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, header_timeout_s: float) -> None:
        super().__init__(runner, host, port)
        self._header_timeout_s = header_timeout_s

    async def start(self) -> None:
        await BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: HeaderDeadline(server(), self._header_timeout_s), self._host, self._port,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
