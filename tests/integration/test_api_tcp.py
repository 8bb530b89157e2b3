"""The API over TCP with TLS and bearer tokens: `nestor serve --listen 127.0.0.1:PORT`.

The CA is made by the daemon on first start (HOME/tls/ca.crt); every TCP request needs a valid
token, the unix socket none. The serial console's websocket refuses a client without a token and
streams a booting VM's console to one with a token.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from nestor.api import tokens
from nestor.client import Client
from nestor.errors import NestorError
from nestor.images.appliance import BOOT_LINE
from nestor.service import VMSpec, VMState
from tests.helpers import Daemon, free_port, nestor, reap_home

pytestmark = pytest.mark.vm


@dataclass
class Remote:
    home: Path
    daemon: Daemon
    url: str
    ca: Path
    token: str


@pytest.fixture
def remote(home: Path) -> Iterator[Remote]:
    run = Path(tempfile.mkdtemp(prefix="nt-tcp-", dir="/tmp"))
    port = free_port()
    daemon = Daemon(home, run / "api.sock", "--listen", f"127.0.0.1:{port}")
    try:
        daemon.wait_ready()
        ca = home / "tls" / "ca.crt"
        assert ca.is_file() and (home / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
        assert str(ca) in daemon.log.read_text()  # the CA's path is printed for the user
        token = nestor(home, "token", "new", "test").stdout.strip()
        yield Remote(home, daemon, f"https://127.0.0.1:{port}", ca, token)
    finally:
        daemon.stop()
        reap_home(home)
        shutil.rmtree(run, ignore_errors=True)


def test_tokens_over_tls(remote: Remote) -> None:
    with Client(socket=remote.daemon.socket) as local:  # the unix socket needs no token
        local.vm_new(VMSpec("listed", memory=256 << 20))
    with httpx.Client(base_url=remote.url, verify=ssl.create_default_context(cafile=str(remote.ca)), timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {remote.token}x"},
                        {"Authorization": remote.token}):
            response = http.get("/v1/vms", headers=headers)
            assert response.status_code == 401, response.text
            assert response.json()["error"]["kind"] == "unauthorized"
        assert http.post("/v1/vms", json={"name": "sneaky"}).status_code == 401
        response = http.get("/v1/vms", headers={"Authorization": f"Bearer {remote.token}"})
        assert response.status_code == 200, response.text
        assert [vm["name"] for vm in response.json()] == ["listed"]
    # the typed client, trusting the CA by file
    with Client(remote.url, token=remote.token, verify=str(remote.ca)) as client:
        assert [(v.name, v.state) for v in client.vm_list()] == [("listed", VMState.OFF)]
        with pytest.raises(NestorError) as err:
            client.vm_show("ghost")
        assert err.value.kind == "not_found"
    with Client(remote.url, token="wrong", verify=str(remote.ca)) as client, pytest.raises(NestorError) as err:
        client.vm_list()
    assert err.value.kind == "unauthorized"
    # a client that does not trust the CA never gets an answer
    with Client(remote.url, token=remote.token) as client, pytest.raises(NestorError, match="cannot reach"):
        client.vm_list()
    # nothing was created by the refused requests; a revoked token is refused from then on
    nestor(remote.home, "token", "revoke", "test")
    with Client(remote.url, token=remote.token, verify=str(remote.ca)) as client, pytest.raises(NestorError) as err:
        client.vm_list()
    assert err.value.kind == "unauthorized"
    assert "sneaky" not in nestor(remote.home, "vm", "list").stdout
    assert remote.token not in (remote.home / tokens.FILE).read_text()


def test_events_over_tls(remote: Remote) -> None:
    """The event stream over TCP needs the token too, and carries what happens on either door."""
    verify = ssl.create_default_context(cafile=str(remote.ca))
    with httpx.Client(base_url=remote.url, verify=verify, timeout=30) as http:
        with http.stream("GET", "/v1/events") as refused:
            assert refused.status_code == 401
        seen: list[str] = []
        with http.stream("GET", "/v1/events", headers={"Authorization": f"Bearer {remote.token}"},
                         timeout=httpx.Timeout(30, read=60)) as stream:
            assert stream.status_code == 200
            with Client(socket=remote.daemon.socket) as local:  # made through the unix socket
                local.vm_new(VMSpec("evt", memory=256 << 20))
            for line in stream.iter_lines():
                seen.append(line)
                if line.startswith("data: ") and '"evt"' in line and '"created"' in line:
                    break
        assert any('"action": "created"' in line for line in seen), seen


def test_console_websocket_needs_a_token(remote: Remote) -> None:
    context = ssl.create_default_context(cafile=str(remote.ca))
    base = remote.url.replace("https://", "wss://")
    with Client(socket=remote.daemon.socket) as local:
        local.vm_new(VMSpec("con", memory=256 << 20))
        for url in (f"{base}/v1/vms/con/console", f"{base}/v1/vms/con/console?token=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, ssl=context, open_timeout=20).close()
            assert refused.value.response.status_code == 403  # closed before the handshake completed
        local.vm_start("con")
        seen = b""
        with connect(f"{base}/v1/vms/con/console", ssl=context, open_timeout=20,
                     additional_headers={"Authorization": f"Bearer {remote.token}"}) as ws:
            deadline = time.monotonic() + 120
            while BOOT_LINE.encode() not in seen and time.monotonic() < deadline:
                try:
                    message = ws.recv(timeout=5)
                except TimeoutError:
                    continue
                seen += message if isinstance(message, bytes) else message.encode()
        assert BOOT_LINE.encode() in seen, seen[-2000:]
        local.vm_stop("con", turn_off=True)


def test_a_foreign_host_or_origin_is_refused_over_tls_too(remote: Remote) -> None:
    """A token in hand does not make a page of another site (foreign Origin) or a rebound name
    (foreign Host) an API caller: 403 before the token is looked at. Addresses and localhost pass."""
    auth = {"Authorization": f"Bearer {remote.token}"}
    port = remote.url.rpartition(":")[2]
    with httpx.Client(base_url=remote.url, verify=ssl.create_default_context(cafile=str(remote.ca)), timeout=30) as http:
        for headers in ({"Host": f"evil.example:{port}"}, {"Host": f"evil.example:{port}", **auth}):
            answer = http.get("/v1/vms", headers=headers)
            assert answer.status_code == 403 and answer.json()["error"]["kind"] == "forbidden", answer.text
        answer = http.post("/v1/vms", json={"name": "sneaky", "memory": 256 << 20},
                           headers={"Origin": f"http://127.0.0.1:{port}", **auth})  # http is not this https origin
        assert answer.status_code == 403 and "Origin" in answer.json()["error"]["message"], answer.text
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"10.1.2.3:{port}"):
            assert http.get("/v1/vms", headers={"Host": host, **auth}).status_code == 200, host
        answer = http.post("/v1/vms", json={"name": "mine", "memory": 256 << 20},
                           headers={"Origin": f"https://127.0.0.1:{port}", **auth})
        assert answer.status_code == 201, answer.text
        assert [vm["name"] for vm in http.get("/v1/vms", headers=auth).json()] == ["mine"]
