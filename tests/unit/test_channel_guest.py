"""The guest end of the API channel against a real HTTP server on a unix socket."""

from __future__ import annotations

import base64
import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from nestor.service.channel_guest import UnixHTTPConnection, answer_line


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the channel reuses one connection

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(200, json.dumps({"path": self.path}).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._reply(201, self.rfile.read(length))

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def api_sock(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "api.sock"
    server = _Server(str(sock), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sock
    finally:
        server.shutdown()
        server.server_close()


def _line(**message: object) -> bytes:
    return json.dumps(message).encode()


def test_sync_is_answered_without_the_api(tmp_path: Path) -> None:
    assert answer_line(_line(id=3, sync=True), UnixHTTPConnection(tmp_path / "absent")) == {"id": 3, "sync": True}


def test_requests_reach_the_api(api_sock: Path) -> None:
    local = UnixHTTPConnection(api_sock)
    first = answer_line(_line(id=1, method="GET", path="/v1/vms?x=1", headers={"host": "h"}, body=""), local)
    second = answer_line(_line(id=2, method="GET", path="/v1/vms", headers={}, body=""), local)
    assert first is not None and second is not None
    assert first["id"] == 1 and first["status"] == 200
    body = json.loads(base64.b64decode(first["body"]))
    assert body["path"] == "/v1/vms?x=1"
    assert second["status"] == 200  # a new connection each time: the daemon closes idle ones
    assert "Content-Length" not in first["headers"] and first["headers"]["Content-Type"] == "application/json"
    posted = answer_line(_line(id=4, method="POST", path="/v1/vms", headers={"content-type": "application/json"},
                               body=base64.b64encode(b'{"name": "a"}').decode()), local)
    assert posted is not None and posted["status"] == 201 and base64.b64decode(posted["body"]) == b'{"name": "a"}'
    local.close()


def test_no_api_is_an_error_answer_and_garbage_is_ignored(tmp_path: Path) -> None:
    local = UnixHTTPConnection(tmp_path / "absent")
    answer = answer_line(_line(id=5, method="GET", path="/v1/vms", headers={}, body=""), local)
    assert answer is not None and answer["id"] == 5 and "did not answer" in answer["error"]
    assert answer_line(b"{torn", local) is None
    assert answer_line(_line(sync=True), local) is None  # no id
