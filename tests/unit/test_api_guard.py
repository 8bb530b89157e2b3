"""The API's Host and Origin checks (api/guard.py): the rules alone, and on the app in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from nestor.api import guard
from nestor.api.app import Settings, create_app
from tests.helpers import LOCAL


@pytest.mark.parametrize(("value", "parsed"), [
    ("localhost:8080", ("localhost", 8080)), ("LOCALHOST", ("localhost", None)), ("[::1]:80", ("::1", 80)),
    ("127.0.0.1", ("127.0.0.1", None)), ("nestor.example.", ("nestor.example", None)),
    ("", None), ("a:b:c", None), ("[::1", None), ("[nothex]:1", None), ("x:99999", None), ("x:８０", None),
    ("evil.example/x", None), ("user@host", None), (":80", None),
])
def test_split_host(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert guard.split_host(value) == parsed


def test_hosts_and_origins() -> None:
    def check(method: str, headers: dict[str, str], names: tuple[str, ...] = (), any_address: bool = False,
              scheme: str = "http") -> str | None:
        refused = guard.check(method, scheme, headers, names, any_address)
        return None if refused is None else refused.message.split()[0]

    assert check("GET", {}) is None  # no Host: HTTP/1.0, no browser
    for host in ("localhost:1", "127.0.0.1:8080", "[::1]:9", "nestor"):
        assert check("GET", {"host": host}) is None
    for host in ("evil.example:8080", "testserver", "192.168.1.5:8080", "localhost.evil.example", "[::1"):
        assert check("GET", {"host": host}) == "Host"
    assert check("GET", {"host": "192.168.1.5:8443"}, any_address=True) is None  # TCP: an address is not rebound
    assert check("GET", {"host": "evil.example"}, any_address=True) == "Host"
    assert check("GET", {"host": "ui.example:1"}, names=("ui.example",)) is None
    own = {"host": "localhost:8080", "origin": "http://localhost:8080"}
    for method in ("POST", "PUT", "PATCH", "DELETE", "GET"):
        assert check(method, own) is None
        assert check(method, {"host": "localhost:8080"}) is None  # no Origin: not a browser's cross-site request
    for origin in ("http://evil.example", "http://localhost:8081", "https://localhost:8080", "null", "http://localhost:8080/x",
                   "file://", "http://127.0.0.1:8080"):
        assert check("POST", {"host": "localhost:8080", "origin": origin}) == "Origin", origin
        assert check("GET", {"host": "localhost:8080", "origin": origin}) is None  # reads: the browser withholds the answer
    assert check("POST", {"host": "localhost", "origin": "http://localhost:80"}) is None  # default ports
    assert check("POST", {"host": "h:443", "origin": "https://h"}, names=("h",), scheme="https") is None


def test_the_app_refuses_with_the_envelope(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    app = create_app(Settings(home))
    with TestClient(app) as default:  # TestClient's own Host, testserver, is no name nestor answers for
        answer = default.get("/v1/vms")
        assert answer.status_code == 403 and answer.json()["error"]["kind"] == "forbidden"
        assert "testserver" in answer.json()["error"]["message"] and "--allow-host" in answer.json()["error"]["hint"]
    with TestClient(app, base_url=LOCAL) as api:
        assert api.get("/v1/vms").json() == []
        answer = api.post("/v1/vms", json={"name": "x"}, headers={"Origin": "http://evil.example"})
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["message"].startswith("Origin header 'http://evil.example'")
        assert api.get("/v1/vms").json() == []
        with pytest.raises(WebSocketDisconnect) as closed, \
                api.websocket_connect("ws://localhost/v1/vms/a/console", headers={"Origin": "http://evil.example"}) as ws:
            ws.receive_bytes()
        assert closed.value.code == 4403
        with api.websocket_connect("ws://localhost/v1/vms/a/console", headers={"Origin": "http://localhost"}) as ws:
            assert ws.receive_json()["error"]["kind"] == "not_found"
    with TestClient(create_app(Settings(home, hosts=("ui.example",))), base_url="http://ui.example:8080") as named:
        assert named.post("/v1/vms", json={"name": "bad name"}, headers={"Origin": "http://ui.example:8080"}).status_code == 400
