"""Who may use the console, and how it keeps other web pages out.

- **Host.** A request's ``Host`` must name the address the console is bound to, or a
  loopback name (``localhost``, ``127.0.0.1``, ``[::1]``) with its port, or a name given in
  ``allowed_hosts``: a page on another site that rebinds its own DNS name to 127.0.0.1 (DNS
  rebinding) sends its own name and is refused. Bound to every address (``0.0.0.0``), where
  the names the host is reached by cannot be known, any ``Host`` is taken unless
  ``allowed_hosts`` lists them; a token is required there anyway.
- **Token.** With a token (``SAGA_UI_TOKEN`` or a file, never argv), every request needs it:
  ``Authorization: Bearer TOKEN``, or the cookie the ``/login`` page sets (``HttpOnly``,
  ``SameSite=Strict``). The static assets and the login page itself need none.
- **CSRF.** Whatever changes something is a POST carrying the console's per-process random
  CSRF token in ``X-CSRF-Token`` (the page has it in a ``<meta>``; ``GET /api/session``
  gives it); an ``Origin`` or ``Sec-Fetch-Site`` that says another site sent it is refused.
- **Headers.** Every answer forbids framing, sniffing, referrers and any script, style or
  connection from elsewhere (``Content-Security-Policy``); API answers are not cached.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

__all__ = ["COOKIE", "CSRF_HEADER", "Guard", "GuardMiddleware", "allowed_hosts", "is_loopback"]

COOKIE = "saga_ui_token"
CSRF_HEADER = "x-csrf-token"
MAX_BODY = 1 << 20
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_HOST_PORT = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]]+):[0-9]{1,5}")
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")
SAFE_METHODS = ("GET", "HEAD")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this
    machine's loopback: ``localhost``, ``127.0.0.0/8``, ``::1``."""
    bare = host.strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _wildcard(host: str) -> bool:
    bare = host.strip("[]")
    return bare in ("", "0.0.0.0", "::")


def _with_port(name: str, port: int) -> set[str]:
    name = name.lower()
    if ":" in name.strip("[]") and not name.startswith("["):
        name = f"[{name}]"  # an IPv6 address, as a Host header writes it
    names = {f"{name}:{port}"}
    if port == 80:
        names.add(name)
    return names


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The ``Host`` header values the console answers when bound to ``host``:``port`` (see
    the module docstring); ``None``: any (bound to every address, with no names given).
    ``extra`` names are taken with the port (``name:port``) unless they give one."""
    names: set[str] = set()
    for name in extra:
        name = name.strip().lower()
        if not name:
            continue
        names |= {name} if _HOST_PORT.fullmatch(name) else _with_port(name, port)
    if _wildcard(host):
        if not names:
            return None
    else:
        names |= _with_port(host, port)
    for loopback in LOOPBACK_NAMES:
        names |= _with_port(loopback, port)
    return frozenset(names)


@dataclass
class Guard:
    """The console's checks: the ``Host`` values it answers (``None``: any), its token
    (``None``: none needed, on a loopback address only) and its CSRF token."""

    hosts: frozenset[str] | None
    token: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def host_ok(self, host: str | None) -> bool:
        return self.hosts is None or (host is not None and host.lower() in self.hosts)

    def token_ok(self, headers: dict[str, str]) -> bool:
        if self.token is None:
            return True
        given = None
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        else:
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:  # a malformed cookie header is no token
                cookie = SimpleCookie()
            if COOKIE in cookie:
                given = cookie[COOKIE].value
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        found[key] = f"{found[key]}; {text}" if key == "cookie" and key in found else text
    return found


async def _refuse(send: Send, status: int, message: str, *, api: bool,
                  location: str | None = None) -> None:
    if location is not None:
        headers = [(b"location", location.encode()), (b"content-length", b"0")]
        body = b""
    elif api:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
    else:
        body = (message + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, *SECURITY_HEADERS, (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """The ASGI middleware that applies a :class:`Guard` to every HTTP request before the
    app sees it, and adds the security headers to every answer."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # none served: refuse before anything is read
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path: str = scope.get("path", "/")
        api = path.startswith("/api/")
        method: str = scope.get("method", "GET")
        host = headers.get("host")
        if not self.guard.host_ok(host):
            await _refuse(send, 400, f"refused: Host {host!r} is not this console's address "
                                     "(start saga ui with that name allowed)", api=api)
            return
        if not path.startswith(OPEN_PATHS) and not self.guard.token_ok(headers):
            if api or method not in SAFE_METHODS:
                await _refuse(send, 401, "a token is needed: send 'Authorization: Bearer "
                                         "TOKEN' or log in at /login", api=True)
            else:
                await _refuse(send, 303, "", api=False,
                              location="/login?next=" + quote(path, safe="/"))
            return
        if method not in SAFE_METHODS:
            problem = self._cross_site(headers, host)
            if problem is None and not self.guard.csrf_ok(headers.get(CSRF_HEADER)) \
                    and path != "/login":
                problem = "the CSRF token is missing or wrong (header X-CSRF-Token: see " \
                          "GET /api/session)"
            if problem is not None:
                await _refuse(send, 403, f"refused: {problem}", api=True)
                return
            length = headers.get("content-length", "0")
            if not length.isdigit() or int(length) > MAX_BODY:
                await _refuse(send, 413, "refused: a request body of at most 1 MiB, with "
                                         "its Content-Length", api=True)
                return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if api:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, secured)

    @staticmethod
    def _cross_site(headers: dict[str, str], host: str | None) -> str | None:
        """Why a state-changing request comes from another site, or ``None``."""
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"sent by another site (Sec-Fetch-Site: {site})"
        origin = headers.get("origin")
        if origin is not None and host is not None and \
                origin.lower() not in (f"http://{host.lower()}", f"https://{host.lower()}"):
            return f"sent from another origin ({origin[:100]})"
        return None
