"""The guest end of the host ↔ guest channel (service/channel.py describes the framing).

Runs in a nested-host guest's `nestor serve --channel PORT`: each framed request read from the
virtio-serial port is first offered to the daemon's plain dispatcher (`local`: api/table.py, the
same handlers without FastAPI), and what it leaves (None) is sent to the daemon's own unix socket
(FastAPI) and its answer written back. Only the standard library here: this module is on the path
of an L1's first answer, where every import costs ten times what it does on the host (TCG).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import paths

MAX_LINE = 64 << 20  # a request larger than this is dropped (the same bound as the host's)
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection")

# method, path with query, headers, body -> (status, headers, body), or None: FastAPI answers it
LocalAnswer = Callable[[str, str, dict[str, str], bytes], "tuple[int, dict[str, str], bytes] | None"]

log = logging.getLogger("nestor.channel")
log.addHandler(logging.NullHandler())


class UnixHTTPConnection:
    """HTTP/1.1 to the daemon's unix socket: one connection per request (uvicorn closes idle
    ones after 5 s, and a unix socket costs nothing to open). http.client is imported with the
    first request: an L1's plain dispatcher may answer everything itself."""

    def __init__(self, sock_path: Path) -> None:
        self.sock_path = sock_path
        self._conn: Any = None

    def exchange(self, method: str, path: str, body: bytes,
                 headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body); OSError when the API does not answer."""
        import http.client

        sock_path = self.sock_path

        class Connection(http.client.HTTPConnection):
            def connect(self) -> None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(sock_path))
                except OSError:
                    sock.close()
                    raise
                self.sock = sock

        self._conn = Connection("nestor")
        try:
            self._conn.request(method, path, body=body, headers=headers)
            response = self._conn.getresponse()
            return response.status, response.getheaders(), response.read()
        except http.client.HTTPException as exc:
            raise OSError(str(exc) or type(exc).__name__) from exc
        finally:
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def serve_channel(port: Path, api_socket: Path, stop: threading.Event, local: LocalAnswer | None = None) -> None:
    """Answer framed requests from the virtio-serial `port`, one at a time: by `local` where it
    answers, else through the local API's socket."""
    while not stop.is_set():
        try:
            fd = os.open(port, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot open %s: %s", port, exc)
            stop.wait(2.0)
            continue
        api = UnixHTTPConnection(api_socket)
        try:
            _pump(fd, api, stop, local)
        except Exception:
            log.exception("channel failed; reopening")
        finally:
            api.close()
            os.close(fd)


def _pump(fd: int, api: UnixHTTPConnection, stop: threading.Event, local: LocalAnswer | None) -> None:
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
            answer = answer_line(line, api, local)
            if answer is not None:
                _write_all(fd, json.dumps(answer).encode() + b"\n")
        if len(buf) > MAX_LINE:
            buf = b""


def answer_line(line: bytes, api: UnixHTTPConnection, local: LocalAnswer | None = None) -> dict[str, Any] | None:
    """The answer to one framed line: a sync, or the response to a request (by `local` if it
    answers, else by the API on the daemon's socket)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "id" not in message:
        return None
    if message.get("sync"):
        return {"id": message["id"], "sync": True}
    headers = {str(k): str(v) for k, v in (message.get("headers") or {}).items()
               if str(k).lower() not in ("host", "connection")}
    method, path = str(message.get("method", "GET")), str(message.get("path", "/"))
    try:
        request_body = base64.b64decode(message.get("body") or "")
    except ValueError:
        return {"id": message["id"], "error": "the request's body is not base64"}
    if local is not None:
        done = local(method, path, headers, request_body)
        if done is not None:
            status, answer_headers, body = done
            return {"id": message["id"], "status": status, "headers": answer_headers,
                    "body": base64.b64encode(body).decode()}
    try:
        status, response_headers, body = api.exchange(method, path, request_body, headers)
    except OSError as exc:
        return {"id": message["id"], "error": f"the guest's nestor API did not answer: {exc}"}
    answer_headers = {}
    for key, value in response_headers:
        if key.lower() in _HOP_BY_HOP:
            continue
        answer_headers[key] = f"{answer_headers[key]}, {value}" if key in answer_headers else value
    return {"id": message["id"], "status": status, "headers": answer_headers,
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
