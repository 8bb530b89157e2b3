"""Issue 18: `host add qemu+tcp://…` / `qemu+ssh://…` to a host that accepts TCP and never answers hung
for ever (libvirt's open has no timeout). A listener on 127.0.0.1 that accepts and never answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from nestor.errors import EngineError
from nestor.remote import libvirt_engine


@pytest.fixture
def silent_port() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)  # held open, never answered

    worker = threading.Thread(target=accept, daemon=True)
    worker.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        worker.join(5)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.parametrize("scheme", ["qemu+tcp", "qemu+ssh"])
def test_a_host_that_never_answers_ends_in_a_clear_error(silent_port: int, scheme: str) -> None:
    uri = f"{scheme}://127.0.0.1:{silent_port}/system"
    if scheme == "qemu+ssh":
        uri += "?no_tty=1"
    with pytest.raises(EngineError) as caught:
        libvirt_engine.connect(uri, timeout=3)
    # either the deadline ("no answer within 3 s") or ssh's own refusal: never a hang
    assert caught.value.message.startswith(f"cannot connect to {uri}"), caught.value.message
    assert caught.value.hint
    assert uri not in libvirt_engine._CONNECTIONS


def test_the_deadline_is_what_ends_a_silent_rpc_peer(silent_port: int) -> None:
    uri = f"qemu+tcp://127.0.0.1:{silent_port}/system"
    with pytest.raises(EngineError, match="no answer within 2 s"):
        libvirt_engine.connect(uri, timeout=2)


def test_a_second_open_does_not_wait_behind_one_still_blocked(silent_port: int) -> None:
    """One abandoned open per URI at most: a frozen host polled again and again pins no more threads."""
    uri = f"qemu+tcp://127.0.0.1:{silent_port}/system"
    with pytest.raises(EngineError, match="no answer within 2 s"):
        libvirt_engine.connect(uri, timeout=2)
    before = sum(t.name == f"libvirt-open {uri}" for t in threading.enumerate())
    with pytest.raises(EngineError, match="has not been answered yet") as caught:
        libvirt_engine.connect(uri, timeout=2)
    assert caught.value.hint
    assert sum(t.name == f"libvirt-open {uri}" for t in threading.enumerate()) == before == 1
