"""The API end to end: `nestor serve` on a unix socket, real QEMU (TCG), the appliance image.

Driven through nestor.client.Client (the programmatic interface) and, for the error envelopes,
raw httpx requests on the same socket, so the status codes themselves are checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nestor.client import Client
from nestor.errors import NotFound, PolicyError, StateError
from nestor.images.appliance import BOOT_LINE
from nestor.service import VMSpec, VMState
from tests.helpers import Daemon, reap_home

pytestmark = pytest.mark.vm


@pytest.fixture
def api(home: Path) -> Iterator[tuple[Daemon, Client, httpx.Client]]:
    """A daemon on a short unix socket path (108-byte limit), a Client and a raw httpx client."""
    run = Path(tempfile.mkdtemp(prefix="nt-api-", dir="/tmp"))
    daemon = Daemon(home, run / "api.sock")
    try:
        daemon.wait_ready()
        with Client(socket=daemon.socket, timeout=120) as client, \
                httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://nestor",
                             timeout=60) as raw:
            yield daemon, client, raw
    finally:
        daemon.stop()
        reap_home(home)
        shutil.rmtree(run, ignore_errors=True)


class EventWatcher:
    """Reads the SSE stream in a thread; events arrive in `self.events`."""

    def __init__(self, socket: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._client = Client(socket=socket, timeout=30)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(15), "the event stream did not open"

    def _run(self) -> None:
        try:
            with self._client._http.stream("GET", "/v1/events", timeout=httpx.Timeout(30, read=None)) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                self.connected.set()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
        except Exception:  # closed by close(): the thread ends
            pass

    def wait_for(self, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if all(event.get(k) == v for k, v in match.items()):
                    return event
            time.sleep(0.1)
        raise AssertionError(f"no event {match} in {timeout} s; saw {self.events}")

    def close(self) -> None:
        self._client.close()


def test_vm_lifecycle_through_the_api(api: tuple[Daemon, Client, httpx.Client]) -> None:
    daemon, client, raw = api
    watcher = EventWatcher(daemon.socket)
    try:
        created = client.vm_new(VMSpec("web", memory=256 << 20))
        assert created.vm.name == "web" and created.vm.state is VMState.OFF and created.vm.memory == 256 << 20
        watcher.wait_for(type="vm", vm="web", action="created")
        assert [(v.name, v.state) for v in client.vm_list()] == [("web", VMState.OFF)]

        # start is an operation: 202 with its URL; the client follows it to its result
        response = raw.post("/v1/vms/web/start")
        assert response.status_code == 202, response.text
        op = response.json()
        assert response.headers["location"] == op["url"] == f"/v1/operations/{op['id']}"
        ended = raw.get(op["url"], params={"wait": 60}).json()
        assert ended["status"] == "success", ended
        assert ended["result"]["state"] == "running" and isinstance(ended["result"]["pid"], int)
        watcher.wait_for(type="operation", operation=op["id"], status="success")
        watcher.wait_for(type="vm", vm="web", state="running")  # the daemon's state watcher saw it

        info = client.vm_show("web")
        assert info.state is VMState.RUNNING and info.accelerator in ("tcg", "kvm") and info.pid == ended["result"]["pid"]
        # the appliance has no guest agent: its serial console shows it booted
        log = b"".join(client.vm_log("web", until=BOOT_LINE, timeout=120))
        assert BOOT_LINE.encode() in log
        assert BOOT_LINE.encode() in b"".join(client.vm_log("web", tail=1 << 20))

        # R2: nesting cannot change while the VM runs; the refusal names its rule (422)
        with pytest.raises(PolicyError) as refused:
            client.vm_set_processor("web", nested=True)
        assert refused.value.rule == "R2" and refused.value.hint == "nestor vm stop web"
        response = raw.patch("/v1/vms/web/processor", json={"nested": True})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["kind"] == "policy" and error["rule"] == "R2" and "stop it first" in error["message"]
        assert client.vm_show("web").nested is False

        # 409: a running VM cannot be removed, started again or its vCPUs changed
        for method, path, body in [("DELETE", "/v1/vms/web", None), ("PATCH", "/v1/vms/web/processor", {"count": 2})]:
            response = raw.request(method, path, json=body)
            assert response.status_code in (409, 422), (method, path, response.text)
            assert response.json()["error"]["kind"] in ("wrong_state", "policy")
        response = raw.delete("/v1/vms/web")
        assert response.status_code == 409 and response.json()["error"]["kind"] == "wrong_state"
        with pytest.raises(StateError, match="already running"):
            client.vm_start("web")  # a failed operation raises the service's own error

        stopped = client.vm_stop("web", timeout=60)
        assert stopped.name == "web" and stopped.how.value in ("shut down", "turned off after the timeout")
        watcher.wait_for(type="vm", vm="web", state="off")
        assert client.vm_show("web").state is VMState.OFF

        client.vm_remove("web")
        watcher.wait_for(type="vm", vm="web", action="removed")
        assert client.vm_list() == []
        with pytest.raises(NotFound):
            client.vm_show("web")
    finally:
        watcher.close()


def test_error_envelopes(api: tuple[Daemon, Client, httpx.Client]) -> None:
    _daemon, client, raw = api

    def envelope(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["kind"] == kind and error["message"] and set(error) == {"kind", "message", "hint", "rule", "resource"}
        return error

    envelope(raw.get("/v1/vms/ghost"), 404, "not_found")
    envelope(raw.post("/v1/vms/ghost/start"), 404, "not_found")  # checked before an operation is made
    envelope(raw.get("/v1/operations/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    envelope(raw.delete("/v1/nats/nope"), 404, "not_found")
    error = envelope(raw.post("/v1/vms", json={"name": "Bad Name!"}), 400, "invalid_input")
    assert error["hint"]
    envelope(raw.post("/v1/vms", json={"name": "x", "vcpus": "many"}), 400, "invalid_input")
    envelope(raw.post("/v1/vms", json={"name": "x", "colour": "red"}), 400, "invalid_input")
    envelope(raw.post("/v1/vms", content=b"{not json", headers={"content-type": "application/json"}), 400,
             "invalid_input")
    envelope(raw.post("/v1/vms", json={"name": "x", "memory": 1}), 400, "invalid_input")
    client.vm_new(VMSpec("dup", memory=256 << 20))
    envelope(raw.post("/v1/vms", json={"name": "dup", "memory": 256 << 20}), 409, "conflict")
    response = raw.post("/v1/vms/dup/stop")  # an operation that fails: its error is the envelope's body
    assert response.status_code == 202
    ended = raw.get(response.json()["url"], params={"wait": 30}).json()
    assert ended["status"] == "failure" and ended["error"]["kind"] == "wrong_state", ended
    with pytest.raises(StateError):
        client.vm_stop("dup")
    assert [v.name for v in client.vm_list()] == ["dup"]  # nothing changed by the refused requests


def test_image_build_operation_shows_progress(api: tuple[Daemon, Client, httpx.Client]) -> None:
    daemon, client, raw = api
    watcher = EventWatcher(daemon.socket)
    try:
        response = raw.post("/v1/images/appliance/build", json={"force": False})  # cached: quick
        assert response.status_code == 202, response.text
        op = raw.get(response.json()["url"], params={"wait": 120}).json()
        assert op["status"] == "success" and op["result"]["name"] == "appliance" and op["result"]["built"], op
        assert any("appliance: cached" in line for line in op["progress"]), op["progress"]
        watcher.wait_for(type="operation", operation=op["id"], status="success")
        assert any(e.get("operation") == op["id"] and "kernel" in str(e.get("progress")) for e in watcher.events)
    finally:
        watcher.close()
    assert "appliance" in [i.name for i in client.image_list() if i.built]  # the shared cache may hold more


def test_image_build_operation_can_be_cancelled(tmp_path: Path, image_store: Path) -> None:
    """A build from nothing (apt) cancelled at once: the operation ends `cancelled`, nothing is published."""
    home = tmp_path / "empty"
    home.mkdir()
    run = Path(tempfile.mkdtemp(prefix="nt-api-", dir="/tmp"))
    daemon = Daemon(home, run / "api.sock")
    try:
        daemon.wait_ready()
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://nestor",
                          timeout=60) as raw:
            op = raw.post("/v1/images/appliance/build").json()
            cancel = raw.delete(op["url"])
            assert cancel.status_code == 202 and cancel.json()["id"] == op["id"], cancel.text
            ended = raw.get(op["url"], params={"wait": 300}).json()
            assert ended["status"] == "cancelled", ended
            assert ended["error"]["kind"] == "cancelled" and not ended["may_cancel"]
            again = raw.delete(op["url"]).json()  # cancelling an ended operation changes nothing
            assert again["status"] == "cancelled"
            images = raw.get("/v1/images").json()
            assert not any(i["built"] for i in images), images
    finally:
        daemon.stop()
        reap_home(home)
        shutil.rmtree(run, ignore_errors=True)


def test_second_daemon_for_a_home_is_refused(api: tuple[Daemon, Client, httpx.Client], home: Path) -> None:
    daemon, _client, raw = api
    other = Path(tempfile.mkdtemp(prefix="nt-api-", dir="/tmp")) / "other.sock"
    result = subprocess.run([sys.executable, "-m", "nestor", "--home", str(home), "serve", "--socket", str(other)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4, result
    assert f"another nestor serve (pid {daemon.proc.pid}) runs for" in result.stderr and "hint: " in result.stderr
    assert raw.get("/v1/vms").status_code == 200  # the first one is untouched
    shutil.rmtree(other.parent, ignore_errors=True)
