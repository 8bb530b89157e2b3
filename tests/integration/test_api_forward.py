"""The API's unix socket behind a TCP forward, as users reach the UI (`ssh -L 8080:/run/nestor/nestor.sock`).

A thread of the test forwards 127.0.0.1:PORT to a real daemon's unix socket, byte for byte, as ssh
does. Through it, a request a web page of another site makes (a foreign `Origin` on a POST or a
websocket) and one a DNS-rebinding page makes (a foreign `Host`) are refused with 403 `forbidden`
and change nothing, while the UI's own requests (its own origin), clients that send no Origin, and
nestor's own client on the socket (Host `nestor`) are answered. No QEMU starts.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from nestor.client import Client
from nestor.service import VMSpec, VMState
from tests.helpers import Daemon, nestor

pytestmark = pytest.mark.vm


class Forward:
    """127.0.0.1:PORT → a unix socket, one thread per direction per connection (ssh -L's job)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            self.sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)
        for s in self.sockets:
            s.close()


@pytest.fixture
def forwarded(home: Path) -> Iterator[tuple[Daemon, Forward]]:
    run = Path(tempfile.mkdtemp(prefix="nt-fwd-", dir="/tmp"))
    daemon = Daemon(home, run / "api.sock", "--allow-host", "nestor.example")
    forward: Forward | None = None
    try:
        daemon.wait_ready()
        forward = Forward(daemon.socket)
        yield daemon, forward
    finally:
        if forward is not None:
            forward.close()
        daemon.stop()
        shutil.rmtree(run, ignore_errors=True)


def refused(response: httpx.Response, header: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["kind"] == "forbidden" and error["message"].startswith(f"{header} header '"), error
    assert "\n" not in error["message"] and error["hint"], error


def test_a_foreign_origin_or_host_is_refused_through_a_forward(forwarded: tuple[Daemon, Forward]) -> None:
    daemon, forward = forwarded
    own = f"http://127.0.0.1:{forward.port}"
    with Client(socket=daemon.socket) as local:  # nestor's own client: Host `nestor`, no Origin
        local.vm_new(VMSpec("web", memory=256 << 20))
    with httpx.Client(base_url=own, timeout=30) as http:
        # A page of another site POSTs a bodiless action (what `fetch(..., {mode: "no-cors"})` sends).
        for origin in ("http://evil.example", f"http://127.0.0.1:{forward.port + 1}", f"https://127.0.0.1:{forward.port}",
                       "null"):
            refused(http.post("/v1/vms/web/start", headers={"Origin": origin}), "Origin")
        refused(http.delete("/v1/vms/web", headers={"Origin": "http://evil.example"}), "Origin")
        refused(http.patch("/v1/host/policy", json={"nesting": "block"}, headers={"Origin": "http://evil.example"}), "Origin")
        # A DNS-rebinding page: its own name in Host, on any method (it reads /v1 and the UI).
        for host in (f"evil.example:{forward.port}", "evil.example", f"127.0.0.1.evil.example:{forward.port}"):
            refused(http.get("/v1/vms", headers={"Host": host}), "Host")
            refused(http.get("/ui/", headers={"Host": host}), "Host")
        refused(http.post("/v1/vms", json={"name": "sneaky"}, headers={"Host": "evil.example"}), "Host")
        # The websocket console (it types into a guest): a foreign origin never gets the handshake.
        base = own.replace("http://", "ws://")
        with pytest.raises(InvalidStatus) as ws_refused:
            connect(f"{base}/v1/vms/web/console", origin="http://evil.example", open_timeout=20).close()  # type: ignore[arg-type]
        assert ws_refused.value.response.status_code == 403
        with connect(f"{base}/v1/vms/web/console", origin=own, open_timeout=20) as ws:  # type: ignore[arg-type]
            assert "not running" in ws.recv(timeout=20)  # the console's own answer for a VM that is off

        # Nothing of it happened.
        assert http.get("/v1/operations").json() == []
        assert http.get("/v1/vms/web").json()["state"] == "off"
        assert http.get("/v1/host/policy").json()["nesting"] != "block"
        assert [vm["name"] for vm in http.get("/v1/vms").json()] == ["web"]

        # The UI's own requests: its origin, the loopback names with any port, --allow-host's name.
        assert http.get("/ui/").status_code == 200
        for host in (f"localhost:{forward.port}", f"[::1]:{forward.port}", "localhost", f"nestor.example:{forward.port}"):
            assert http.get("/v1/vms", headers={"Host": host}).status_code == 200, host
        made = http.post("/v1/vms", json={"name": "mine", "memory": 256 << 20}, headers={"Origin": own})
        assert made.status_code == 201, made.text
        made = http.post("/v1/vms", json={"name": "named", "memory": 256 << 20},
                         headers={"Host": f"nestor.example:{forward.port}", "Origin": f"http://nestor.example:{forward.port}"})
        assert made.status_code == 201, made.text
        assert http.post("/v1/vms", json={"name": "plain", "memory": 256 << 20}).status_code == 201  # no Origin: curl
        # a GET from a foreign page is not a change (the browser keeps the answer from it: no CORS headers)
        assert http.get("/v1/vms", headers={"Origin": "http://evil.example"}).status_code == 200
    # A request with no Host at all (HTTP/1.0, as no browser sends it) on the socket itself.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(30)
        raw.connect(str(daemon.socket))
        raw.sendall(b"GET /v1/vms HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    with Client(socket=daemon.socket) as local:
        assert sorted(v.name for v in local.vm_list()) == ["mine", "named", "plain", "web"]
        assert local.vm_show("web").state == VMState.OFF


def test_allow_host_refuses_a_bad_name(home: Path) -> None:
    for bad in ("evil example", "host:8080", "a/b", "-x", ""):
        result = nestor(home, "serve", "--socket", str(home / "x.sock"), "--allow-host", bad, check=False)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert result.stderr.startswith("error: invalid --allow-host name") and "hint: " in result.stderr, result.stderr
    assert not (home / "x.sock").exists()
