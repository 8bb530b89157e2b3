"""Which browsers' requests the API answers: its Host and Origin checks (before every route).

The unix socket needs no token, and users reach the UI through it with a forward
(`ssh -L 8080:/run/nestor/nestor.sock`): any web page the user visits could then POST to
127.0.0.1:8080 (a foreign `Origin`), or read /v1 under its own name once its DNS points there
(DNS rebinding: a foreign `Host`). So:

- a request whose `Host` is not one nestor answers for is refused, whatever its method: on the
  unix socket the loopback names (localhost, 127.0.0.1, [::1]) and `nestor` (what nestor's own
  clients send: client.py, the L1 channel's guest end); over TCP also the `--listen` name or
  address, the machine's names when it listens on every address, and any IP address (an address
  cannot be rebound: a page at an address is that address's own); `serve --allow-host NAME` adds
  names to both. The port is not checked (a forward picks its own). A request with no `Host`
  (HTTP/1.0: no browser sends one) passes.
- a state-changing request (POST, PUT, PATCH, DELETE) and every websocket (the console types
  into a guest) whose `Origin` is present and is not the request's own scheme://host:port is
  refused. Browsers send `Origin` on such requests; other clients send none.

Refusals are 403 in the one error envelope (errors.Forbidden). Standard library only.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..errors import Forbidden

LOOPBACK = ("localhost", "127.0.0.1", "::1")
OWN_CLIENT = "nestor"  # the Host nestor's own clients send (client.py's base URL; channel_guest.py)
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def split_host(value: str) -> tuple[str, int | None] | None:
    """(name or address, port) of a Host header or an origin's authority; None if malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/@?# \t\\"):
        return None
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    else:
        name, _, port_text = value.partition(":")
        if ":" in port_text:
            return None
    if port_text and not (port_text.isascii() and port_text.isdigit() and int(port_text) < 65536):
        return None
    name = name.rstrip(".")
    return (name, int(port_text) if port_text else None) if name else None


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, names: Iterable[str], any_address: bool) -> bool:
    """May a request name `name` (a Host's name part, lower case) as the one it is for?"""
    return name in LOOPBACK or name == OWN_CLIENT or name in names or (any_address and is_address(name))


def origin_matches(origin: str, scheme: str, host: tuple[str, int | None]) -> bool:
    """Is `origin` (scheme://host[:port]) the request's own: its scheme, Host name and port?"""
    parsed = urllib.parse.urlsplit(origin.strip())
    if parsed.scheme not in DEFAULT_PORTS or parsed.path or parsed.query or parsed.fragment:
        return False
    theirs = split_host(parsed.netloc)
    if theirs is None or parsed.scheme != scheme:
        return False
    default = DEFAULT_PORTS[scheme]
    return theirs[0] == host[0] and (theirs[1] or default) == (host[1] or default)


def check(method: str, scheme: str, headers: dict[str, str], names: Iterable[str], any_address: bool,
          websocket: bool = False) -> Forbidden | None:
    """The refusal of this request, or None. `headers` lower-case names; `scheme` http or https."""
    host_header = headers.get("host")
    host = split_host(host_header) if host_header is not None else None
    if host_header is not None and (host is None or not host_allowed(host[0], names, any_address)):
        return Forbidden(f"Host header '{host_header[:100]}' is not a name this nestor answers for",
                         hint="open the UI as http://localhost:PORT (or 127.0.0.1), or start the daemon with "
                              "nestor serve --allow-host NAME")
    origin = headers.get("origin")
    unsafe = websocket or method.upper() in UNSAFE
    if origin is not None and unsafe and (host is None or not origin_matches(origin, scheme, host)):
        return Forbidden(f"Origin header '{origin[:100]}' is not this API's own origin "
                         f"({scheme}://{host_header or '?'}): cross-site requests are refused",
                         hint="send the request from the UI's own page, or from a client that sends no Origin")
    return None


class Guard:
    """ASGI middleware: `check` on every HTTP request and websocket, before anything else runs."""

    def __init__(self, app: ASGIApp, names: Iterable[str] = (), any_address: bool = False) -> None:
        self.app = app
        self.names = frozenset(n.lower().strip("[]").rstrip(".") for n in names)
        self.any_address = any_address

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = str(scope.get("scheme") or "http")
        scheme = {"ws": "http", "wss": "https"}.get(given, given)
        refused = check(scope.get("method", "GET"), scheme, headers, self.names, self.any_address,
                        websocket=kind == "websocket")
        if refused is None:
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": refused.message[:120]})
            return
        body = json.dumps({"error": refused.to_json()}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
