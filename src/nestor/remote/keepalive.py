"""Deadlines for libvirt calls on an open connection: libvirt's keepalive protocol.

A libvirt call blocks in C with no timeout of its own. `libvirt_engine._open` bounds the open; once a
connection is open, a peer that stops answering (a frozen host, a dropped network, a stopped daemon)
would hold every later call (lookups, `dom.info()`, create, shutdown, a migration, the API channel's
stream) and the daemon thread that made it for ever. With keepalive on, libvirt's client pings the
peer after INTERVAL s without traffic and closes the connection when COUNT pings in a row go
unanswered: every call blocked on it then returns an error within INTERVAL * (COUNT + 1) s.

Keepalive needs an event loop implementation registered before a connection is opened, and run for
ever (libvirt closes a connection whose pings nobody sends): `ensure_event_loop` registers libvirt's
default one once per process and runs it in a daemon thread. Keepalive is a feature of libvirt's RPC
client (the remote driver: qemu+ssh/tcp/tls, and a local qemu:/// URI, which talks to libvirtd or
virtqemud over a unix socket); drivers that run inside this process (test:///) have no peer that
could stop answering and refuse it (VIR_ERR_NO_SUPPORT), so nothing is faked for them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import libvirt

from ..errors import EngineError

INTERVAL = 5  # seconds without traffic before a ping (virsh's and libvirtd's own default)
COUNT = 5  # unanswered pings in a row before the connection is closed (libvirtd's server default)
HINT = "nestor connects again on the next call once the host answers"

_started = False
_lock = threading.Lock()


def bound(interval: int = INTERVAL, count: int = COUNT) -> int:
    """Seconds after which a call on a connection to a dead peer returns (at most)."""
    return interval * (count + 1)


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread, once per process."""
    global _started
    with _lock:
        if _started:
            return
        if libvirt.virEventRegisterDefaultImpl() < 0:
            raise EngineError("cannot register libvirt's event loop", hint="check the libvirt Python binding")
        threading.Thread(target=_run, name="libvirt-events", daemon=True).start()
        _started = True


def _run() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:  # one iteration failed (libvirt reported it): go on
            time.sleep(0.1)


def apply(conn: Any) -> bool:
    """Turn keepalive on for a new connection; False where the driver has none (test:///, see above)."""
    try:
        return int(conn.setKeepAlive(INTERVAL, COUNT)) == 0  # 1: a peer too old to answer pings
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return False
        raise


def alive(conn: Any) -> bool:
    """Is the connection still open? (virConnectIsAlive answers from the client's own state, no RPC)"""
    try:
        return int(conn.isAlive()) == 1
    except libvirt.libvirtError:
        return False


def stopped_answering(host: str, uri: str, detail: str) -> EngineError:
    """The error of a call that ended because the connection to the host died."""
    return EngineError(f"host '{host}' ({uri}) stopped answering: {detail}; check the host, then retry", hint=HINT)
