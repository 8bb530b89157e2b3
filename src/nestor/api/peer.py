"""Who is on the other end of the API's unix socket: the kernel's SO_PEERCRED (pid, uid, gid).

uvicorn does not pass a unix socket's peer to the app, so the daemon serves with an HTTP protocol
class (uvicorn's own, subclassed) that reads the peer's credentials once per connection and puts
them into every request's ASGI scope as `nestor.peer` (service/audit.py records them).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

SCOPE_KEY = "nestor.peer"
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def credentials(sock: Any) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of a unix socket's peer; None for other sockets or where the OS has no SO_PEERCRED."""
    if sock is None or getattr(sock, "family", None) != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    except (OSError, struct.error):
        return None
    return pid, uid, gid


class _WithPeer:
    """The app, with the connection's peer in each request's scope."""

    def __init__(self, app: Any, peer: tuple[int, int, int]) -> None:
        self.app, self.peer = app, peer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope[SCOPE_KEY] = self.peer
        await self.app(scope, receive, send)


def protocol() -> type[Any]:
    """uvicorn's HTTP protocol class (as `http="auto"` would choose it) that records the peer."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class PeerProtocol(base):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            peer = credentials(transport.get_extra_info("socket"))
            if peer is not None:
                self.app = _WithPeer(getattr(self, "app"), peer)  # noqa: B009 (the base is typed Any)

    return PeerProtocol
