"""An L1's daemon as its init starts it (`nestor --home H serve --channel PORT`), on this host.

The virtio-serial port is stood in for by a pseudo-terminal in raw mode (one byte stream both
ways, as the port is), relayed to a unix socket the way QEMU's chardev is, so the host's own
ChannelTransport talks to it. Checked: the channel answers the quickstart's and tree's requests
before FastAPI is loaded, with the same answers as FastAPI gives on the same daemon's socket; a
request the plain dispatcher leaves to FastAPI loads it and is answered through the channel.
No QEMU is started (VMs have a dummy kernel); no network is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import socket
import tempfile
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nestor import faults, paths
from nestor.errors import GuestError
from nestor.service.channel import ChannelTransport
from tests.helpers import Daemon


class PtyRelay:
    """A raw pty (the guest's port) and a unix socket (the host's end), bytes copied both ways."""

    def __init__(self, sock_path: Path) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: a plain byte pipe
        self.port = os.ttyname(self.slave)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(sock_path))
        self.listener.listen(1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.2)
            if not ready:
                continue
            conn, _ = self.listener.accept()
            with conn:
                while not self.stop.is_set():
                    readable, _, _ = select.select([conn, self.master], [], [], 0.2)
                    if conn in readable:
                        data = conn.recv(1 << 16)
                        if not data:
                            break
                        os.write(self.master, data)
                    if self.master in readable:
                        conn.sendall(os.read(self.master, 1 << 16))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def l1(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Daemon, Path, Path]]:
    """An L1's daemon; parametrized indirectly with a point, it waits there as it starts (faults.pause)."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "vmlinux").write_bytes(b"not really a kernel")
    run = Path(tempfile.mkdtemp(prefix="nt-chan-", dir="/tmp"))  # unix socket paths: 108 bytes at most
    relay = PtyRelay(run / "chan.sock")
    point = getattr(request, "param", None)
    env = {faults.PAUSE_ENV: point} if point else None
    daemon = Daemon(home, run / "api.sock", "--channel", relay.port, "--files", str(tmp_path), env=env)  # the kernel is there
    try:
        yield daemon, run / "chan.sock", home
    finally:
        daemon.stop()
        relay.close()
        shutil.rmtree(run, ignore_errors=True)


@contextlib.contextmanager
def channel(sock: Path, timeout: float = 60) -> Iterator[httpx.Client]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            transport = ChannelTransport(sock, "l1", timeout=30, sync_timeout=1.0)
            break
        except GuestError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with httpx.Client(transport=transport, base_url="http://nestor", timeout=30) as client:
        yield client


def test_the_channel_answers_before_fastapi_and_like_it(l1: tuple[Daemon, Path, Path]) -> None:
    daemon, chan, home = l1
    vm = {"name": "l2", "memory": 256 << 20, "kernel": str(home.parent / "vmlinux"), "append": "nestor.dhcp=1"}
    with channel(chan) as api:
        first = api.get("/v1/vms")
        assert first.status_code == 200 and first.json() == []
        created = api.post("/v1/vms", json=vm)
        assert created.status_code == 201, created.text
        requests = [("GET", "/v1/vms", None), ("GET", "/v1/vms/l2", None), ("GET", "/v1/tree?timeout=5", None),
                    ("GET", "/v1/switches", None), ("GET", "/v1/nats", None), ("GET", "/v1/vms/l2/log?tail=10", None),
                    ("GET", "/v1/vms/l3", None), ("DELETE", "/v1/nats/nat0", None),
                    ("PUT", "/v1/switches/nat0/address", {"address": "10.0.0.1/24"}),
                    ("POST", "/v1/vms/l3/start", None),
                    ("GET", "/v1/operations/00000000-0000-4000-8000-000000000000?wait=0.5", None)]
        through_channel = [api.request(m, p, json=b) for m, p, b in requests]
        log = daemon.log.read_text()
        assert "answered without FastAPI" in log and "loading" not in log, log[-2000:]
        assert "fastapi" not in Path(f"/proc/{daemon.proc.pid}/maps").read_text()  # pydantic_core is native
        assert "pydantic_core" not in Path(f"/proc/{daemon.proc.pid}/maps").read_text()

        # the same daemon's socket: FastAPI loads for its first client
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://nestor",
                          timeout=120) as fast:
            for (method, path, body), plain in zip(requests, through_channel, strict=True):
                answer = fast.request(method, path, json=body)
                assert (answer.status_code, answer.headers.get("content-type")) == \
                    (plain.status_code, plain.headers.get("content-type")), (method, path)
                assert answer.content == plain.content, (method, path)
        assert "a client on the API socket: loading FastAPI" in daemon.log.read_text()

        # what the dispatcher leaves to FastAPI still comes back through the channel
        invalid = api.post("/v1/vms", json={"name": 5})
        assert invalid.status_code == 400 and invalid.json()["error"]["kind"] == "invalid_input"
        assert api.get("/v1/openapi.json").json()["info"]["title"] == "nestor"
        assert json.loads(api.get("/v1/vms").content)[0]["name"] == "l2"
    assert daemon.stop() == 0


def test_a_delegated_request_loads_fastapi_first(l1: tuple[Daemon, Path, Path]) -> None:
    daemon, chan, _home = l1
    with channel(chan) as api:
        missing = api.get("/v1/nothing")  # no route: FastAPI's 404, in the one envelope
        assert missing.status_code == 404 and missing.json()["error"]["kind"] == "not_found"
        assert "channel: GET /v1/nothing is FastAPI's: loading it" in daemon.log.read_text()
        assert api.get("/v1/vms").json() == []
    assert daemon.stop() == 0


def ended_cleanly(daemon: Daemon, home: Path) -> None:
    assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
    assert not daemon.socket.exists()
    assert not paths.Home(home).daemon_pidfile.exists()  # its claim released
    assert "Traceback" not in daemon.log.read_text()


@pytest.mark.parametrize("l1", ["serve:channel"], indirect=True)
def test_sigterm_before_fastapi_ends_the_daemon_cleanly(l1: tuple[Daemon, Path, Path]) -> None:
    """Issue 18: the channel answers from its own thread, started before the main thread put its
    SIGTERM handler in place; a SIGTERM in between killed the daemon (exit -15). The daemon waits
    at that very point here (faults.pause), so the signal lands in that window every run."""
    daemon, chan, home = l1
    daemon.wait_log("paused at serve:channel")
    with channel(chan) as api:
        assert api.get("/v1/vms").status_code == 200
    ended_cleanly(daemon, home)
    assert "loading" not in daemon.log.read_text()  # FastAPI was never needed


@pytest.mark.parametrize("l1", ["serve:start"], indirect=True)
def test_sigterm_at_the_daemons_first_line_ends_it_cleanly(l1: tuple[Daemon, Path, Path]) -> None:
    """The earliest point: nestor/__main__.py before it imports the CLI or the server. The daemon
    ends without claiming its home."""
    daemon, _chan, home = l1
    daemon.wait_log("paused at serve:start")
    ended_cleanly(daemon, home)
    assert "stopped by a signal before it started" in daemon.log.read_text()


def test_sigterm_once_serving_still_ends_the_daemon_cleanly(l1: tuple[Daemon, Path, Path]) -> None:
    daemon, chan, home = l1
    with channel(chan) as api:
        assert api.get("/v1/vms").status_code == 200
    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    assert not paths.Home(home).daemon_pidfile.exists()  # its claim released
    assert "loading" not in daemon.log.read_text()  # FastAPI was never needed
