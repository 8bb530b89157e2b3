"""The QMP facade against a peer that hangs up at each step of a session: every way ends in an
EngineError, never in qemu.qmp's internals (a `vm show` racing a `vm stop` got a bare
AssertionError from qemu.qmp's connect(), CI run of stop 22)."""

from __future__ import annotations

import gc
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor.engine.qmp import Monitor
from nestor.errors import EngineError

GREETING = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, "package": ""}, "capabilities": []}}\r\n'


def _answer(request: bytes, answer: dict[str, object]) -> bytes:
    return json.dumps({"return": answer, "id": json.loads(request).get("id")}).encode() + b"\r\n"


def _peer(sock: Path, stage: int) -> Iterator[None]:
    """A QMP server that says `stage` things (greeting, capabilities' answer, status), then hangs up."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.listen(8)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    if stage >= 1:
                        conn.sendall(GREETING)
                    if stage >= 2:
                        conn.sendall(_answer(conn.recv(4096), {}))
                    if stage >= 3:
                        conn.sendall(_answer(conn.recv(4096), {"status": "running", "running": True}))
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_a_peer_that_hangs_up_gives_an_engine_error(tmp_path: Path, stage: int, caplog: pytest.LogCaptureFixture) -> None:
    sock = tmp_path / "qmp.sock"
    peer = _peer(sock, stage)
    next(peer)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(20):  # stage 2 (hang up right after negotiation) failed every time before the fix
                with pytest.raises(EngineError) as err, Monitor(sock, "c5", timeout=2.0) as mon:
                    mon.status()
                assert "vm 'c5'" in err.value.message
            gc.collect()  # a loop closed over live tasks logs "Task was destroyed but it is pending" here
        assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    finally:
        next(peer, None)


def test_a_peer_that_answers_then_hangs_up_gives_its_answer(tmp_path: Path) -> None:
    sock = tmp_path / "qmp.sock"
    peer = _peer(sock, 3)
    next(peer)
    try:
        with Monitor(sock, "c5", timeout=2.0) as mon:
            assert mon.status() == "running"
    finally:
        next(peer, None)
