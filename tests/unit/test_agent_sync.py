"""The guest agent's resynchronisation (guest-sync-delimited) against a scripted peer.

A fake peer stands in for the agent only to script the stale bytes a killed client leaves
behind; tests/integration/test_races.py kills a real `vm exec` against a real L1's agent.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

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
