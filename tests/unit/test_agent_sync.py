"""The guest agent's resynchronisation (guest-sync-delimited) against a scripted peer.

A fake peer stands in for the agent only to script the stale bytes a killed client leaves
behind; tests/integration/test_races.py kills a real `vm exec` against a real L1's agent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nestor.engine.qmp import Agent
from nestor.errors import GuestError


def _serve(server: socket.socket, stale: bytes, answer_sync: bool) -> None:
    conn, _ = server.accept()
    with conn:
        conn.sendall(stale)  # what a killed client left unread: an old answer, half a line
        data = b""
        while b"\n" not in data:
            data += conn.recv(4096)
        if not answer_sync:
            return
        assert data.startswith(b"\xff"), data  # the flush byte comes first
        token = json.loads(data[1:].split(b"\n")[0])["arguments"]["id"]
        conn.sendall(b'\xff{"return": 12345}\n' + b'\xff{"return": %d}\n' % token)
        data = conn.recv(4096)  # qemu.qmp sends one compact JSON object, no newline
        while True:
            try:
                request = json.loads(data)
                break
            except ValueError:
                data += conn.recv(4096)
        assert request["execute"] == "guest-ping"
        conn.sendall(json.dumps({"return": {}, "id": request.get("id")}).encode() + b"\n")


@pytest.fixture
def agent_sock(tmp_path: Path) -> tuple[Path, socket.socket]:
    path = tmp_path / "qga.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    return path, server


def test_stale_answers_are_skipped(agent_sock: tuple[Path, socket.socket]) -> None:
    path, server = agent_sock
    peer = threading.Thread(target=_serve, args=(server, b'{"return": {"pid": 7}}\n{"return": {"exi', True))
    peer.start()
    with Agent(path, "vm1", timeout=5) as agent:
        agent.ping()
    peer.join(5)
    server.close()


def test_an_agent_that_never_syncs_is_an_error(agent_sock: tuple[Path, socket.socket]) -> None:
    path, server = agent_sock
    peer = threading.Thread(target=_serve, args=(server, b"", False))
    peer.start()
    Agent.SYNC_TIMEOUT = 1.0
    try:
        with pytest.raises(GuestError, match="guest-sync-delimited|closed"), Agent(path, "vm1", timeout=1):
            pass
    finally:
        Agent.SYNC_TIMEOUT = 5.0
    peer.join(5)
    server.close()


class Trickler:
    """A guest agent that keeps the caller busy without ever finishing: `script` answers each
    request after the sync (or trickles bytes); `closed_early` is set when the caller hung up
    while the agent was still going (the caller's deadline, not the agent, ended the call)."""

    def __init__(self, server: socket.socket, sync: bool, script: Any = None, seconds: float = 30.0) -> None:
        self.server, self.sync, self.script, self.seconds = server, sync, script, seconds
        self.closed_early = threading.Event()
        self.served = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        end = time.monotonic() + self.seconds
        with conn:
            data = b""
            while b"\n" not in data:
                data += conn.recv(4096)
            try:
                if not self.sync:
                    while time.monotonic() < end:  # stale bytes, one every 50 ms: never the sentinel
                        conn.sendall(b" ")
                        time.sleep(0.05)
                    return
                token = json.loads(data[1:].split(b"\n")[0])["arguments"]["id"]
                conn.sendall(b'\xff{"return": %d}\n' % token)
                decoder = json.JSONDecoder()
                buf = ""
                while time.monotonic() < end:
                    chunk = conn.recv(4096)
                    if not chunk:
                        self.closed_early.set()
                        return
                    buf += chunk.decode()
                    while buf.strip():
                        try:
                            request, used = decoder.raw_decode(buf.lstrip())
                        except ValueError:
                            break
                        buf = buf.lstrip()[used:]
                        self.served += 1
                        answer = self.script(request)
                        conn.sendall(json.dumps({"return": answer, "id": request.get("id")}).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                self.closed_early.set()


def test_a_sync_trickled_a_byte_at_a_time_ends_at_one_deadline(agent_sock: tuple[Path, socket.socket]) -> None:
    """On main the timeout was per recv(): a byte every 50 ms (4 s would do) held the caller forever."""
    path, server = agent_sock
    agent = Trickler(server, sync=False)
    with pytest.raises(GuestError, match="guest-sync-delimited within 1.0 s"), Agent(path, "vm1", timeout=1):
        pass
    assert agent.closed_early.wait(40)  # nestor hung up while the agent still trickled
    server.close()


def test_the_agents_timeout_bounds_the_whole_session(agent_sock: tuple[Path, socket.socket]) -> None:
    """An exec whose status the agent answers slowly, never exited: the session's timeout ends it,
    even when the command's own timeout is longer (on main: each call had the full timeout)."""
    path, server = agent_sock

    def script(request: dict[str, Any]) -> Any:
        if request["execute"] == "guest-exec":
            return {"pid": 7}
        time.sleep(0.3)
        return {"exited": False}

    agent = Trickler(server, sync=True, script=script, seconds=30)
    with pytest.raises(GuestError, match="vm1"), Agent(path, "vm1", timeout=2) as guest:
        guest.exec(["sleep", "infinity"], timeout=3600)
    assert agent.closed_early.wait(40), "the session ended only when the agent stopped answering"
    server.close()


@pytest.mark.parametrize("status", [
    {"exited": True, "exitcode": "zero"},
    {"exited": True, "exitcode": 0, "out-data": "!!"},
    {"exited": True, "exitcode": 0, "out-data": 5},
    [],
])
def test_a_malformed_exec_status_is_a_guest_error(agent_sock: tuple[Path, socket.socket], status: Any) -> None:
    path, server = agent_sock
    Trickler(server, sync=True, script=lambda r: {"pid": 7} if r["execute"] == "guest-exec" else status, seconds=10)
    with pytest.raises(GuestError, match="malformed"), Agent(path, "vm1", timeout=5) as guest:
        guest.exec(["true"], timeout=5)
    server.close()


def test_malformed_interfaces_are_skipped() -> None:
    from nestor.service.ssh import agent_addresses

    assert agent_addresses({"a": 1}) == []
    assert agent_addresses([1, {"name": "eth0", "ip-addresses": 5},
                            {"name": "eth1", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "nope"}, 3,
                                                              {"ip-address-type": "ipv4", "ip-address": "10.1.2.3"}]}]) \
        == ["10.1.2.3"]
