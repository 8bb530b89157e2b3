"""The guest end of the host ↔ guest channel (service/channel.py describes the framing).

Runs in a nested-host guest's `nestor serve --channel PORT`: each framed request read from the
virtio-serial port is sent to the daemon's own unix socket and its answer written back. Only the
standard library here: this module is on the path of an L1's first answer, where every import
costs ten times what it does on the host (TCG).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .. import paths

MAX_LINE = 64 << 20  # a request larger than this is dropped (the same bound as the host's)
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection")

log = logging.getLogger("nestor.channel")
log.addHandler(logging.NullHandler())


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 to the daemon's unix socket: one connection per request (uvicorn closes idle
    ones after 5 s, and a unix socket costs nothing to open)."""

    def __init__(self, sock_path: Path) -> None:
        super().__init__("nestor")
        self.sock_path = sock_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.sock_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def serve_channel(port: Path, api_socket: Path, stop: threading.Event) -> None:
    """Forward framed requests from the virtio-serial `port` to the local API, one at a time."""
    while not stop.is_set():
        try:
            fd = os.open(port, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot open %s: %s", port, exc)
            stop.wait(2.0)
            continue
        local = UnixHTTPConnection(api_socket)
        try:
            _pump(fd, local, stop)
        except Exception:
            log.exception("channel failed; reopening")
        finally:
            local.close()
            os.close(fd)


def _pump(fd: int, local: UnixHTTPConnection, stop: threading.Event) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    while not stop.is_set():
        events = poller.poll(500)
        if not events:
            continue
        if not any(ev & select.POLLIN for _, ev in events):
            time.sleep(0.1)  # POLLHUP: no host client; wait for one
            continue
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            time.sleep(0.1)
            continue
        buf += chunk
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            answer = answer_line(line, local)
            if answer is not None:
                _write_all(fd, json.dumps(answer).encode() + b"\n")
        if len(buf) > MAX_LINE:
            buf = b""


def answer_line(line: bytes, local: UnixHTTPConnection) -> dict[str, Any] | None:
    """The answer to one framed line: a sync, or the local API's response to a request."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "id" not in message:
        return None
    if message.get("sync"):
        return {"id": message["id"], "sync": True}
    headers = message.get("headers") or {}
    try:
        local.request(str(message.get("method", "GET")), str(message.get("path", "/")),
                      body=base64.b64decode(message.get("body") or ""),
                      headers={str(k): str(v) for k, v in headers.items()
                               if str(k).lower() not in ("host", "connection")})
        response = local.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return {"id": message["id"], "error": f"the guest's nestor API did not answer: {exc}"}
    finally:
        local.close()
    answer_headers: dict[str, str] = {}
    for key, value in response.getheaders():
        if key.lower() in _HOP_BY_HOP:
            continue
        answer_headers[key] = f"{answer_headers[key]}, {value}" if key in answer_headers else value
    return {"id": message["id"], "status": response.status, "headers": answer_headers,
            "body": base64.b64encode(body).decode()}


def _write_all(fd: int, data: bytes, timeout: float = 10.0) -> None:
    """Write an answer; drop it if the host end stays unwritable (its client went away)."""
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    while view and time.monotonic() < deadline:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 0.5)
            continue
        view = view[written:]


def guest_port() -> Path:
    return Path("/dev/virtio-ports") / paths.API_PORT
