"""Issue 18: calls on an open libvirt connection are bounded by keepalive (remote/keepalive.py).
What a dead connection becomes, and when nestor opens a new one. The real bound, against a stopped
libvirtd, is tests/integration/test_libvirt_qemu.py::test_a_libvirtd_that_stops_answering_…"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import libvirt
import pytest

from nestor.errors import EngineError
from nestor.remote import keepalive, libvirt_engine


class Dead:
    """A connection keepalive has closed: libvirt's client says it is not alive."""

    closed = False

    def isAlive(self) -> int:
        return 0

    def close(self) -> int:
        self.closed = True
        raise libvirt.libvirtError("client socket is closed")


class Failed:
    def get_error_message(self) -> str:
        return "internal error: connection closed due to keepalive timeout"


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    libvirt_engine.disconnect_all()
    yield
    libvirt_engine.disconnect_all()


def test_a_dead_peer_is_given_up_no_later_than_an_open_would_be() -> None:
    assert keepalive.bound() == keepalive.INTERVAL * (keepalive.COUNT + 1) == 30
    assert keepalive.bound() <= libvirt_engine.CONNECT_TIMEOUT
    assert keepalive.bound(2, 2) == 6


def test_the_error_names_the_host_and_what_to_do_on_one_line() -> None:
    err = keepalive.stopped_answering("far", "qemu+ssh://root@far/system", "cannot list domains: closed")
    assert isinstance(err, EngineError)
    assert err.message == ("host 'far' (qemu+ssh://root@far/system) stopped answering: cannot list domains: "
                           "closed; check the host, then retry")
    assert "\n" not in err.message and err.hint


def test_the_event_loop_runs_once_per_process() -> None:
    keepalive.ensure_event_loop()
    keepalive.ensure_event_loop()
    assert [t.name for t in threading.enumerate()].count("libvirt-events") == 1


def test_the_test_driver_has_no_keepalive_and_is_not_given_one() -> None:
    conn = libvirt_engine.connect("test:///default")
    assert keepalive.apply(conn) is False  # in-process driver: VIR_ERR_NO_SUPPORT, no peer to lose
    assert keepalive.alive(conn)


def test_alive_reads_a_failing_answer_as_dead() -> None:
    class Broken:
        def isAlive(self) -> int:
            raise libvirt.libvirtError("no connection")

    assert keepalive.alive(Broken()) is False and keepalive.alive(Dead()) is False


def test_a_closed_connection_is_replaced_on_the_next_call() -> None:
    uri = "test:///default"
    host = libvirt_engine.LibvirtHost("t", uri)
    dead = Dead()
    libvirt_engine._CONNECTIONS[uri] = dead
    assert host.alive() is False
    err = host._error("cannot list domains", Failed())
    assert err.message.startswith(f"host 't' ({uri}) stopped answering: cannot list domains: internal error")
    conn = host.conn  # a new connection, the dead one closed and dropped
    assert conn is not dead and dead.closed and libvirt_engine._CONNECTIONS[uri] is conn
    assert host.alive() and host.domains() is not None
    assert host._error("cannot list domains", Failed()).message.startswith("host 't': cannot list domains:")
