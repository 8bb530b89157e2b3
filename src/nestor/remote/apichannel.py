"""The nestor API channel of a VM on a libvirt host, carried by libvirt (virDomainOpenChannel).

A libvirt VM with nesting on gets the same virtio-serial port as a local nested-host guest
(``org.nestor.api.0``, domxml.API_CHANNEL); a nestor inside it serves its API there. The port's
host end is a unix socket on *that* host, which only its libvirtd can reach when the host is
another machine, so nestor asks libvirt to open the channel and relays the bytes over the
libvirt connection (ssh/TLS for a real host). One code path for local and remote libvirtds.

The stream is blocking (a reader thread turns it into chunks for the framing of
service/channel.py), and bounded as every call on the connection is: keepalive (keepalive.py)
closes the connection of a host that stops answering, which ends a blocked send or recv with an
error; that error names the host.
QEMU's socket takes one client at a time and libvirt refuses a second open of a channel in use,
so two nestors cannot interleave requests on one VM's channel.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import libvirt

from ..errors import GuestError
from ..service.channel import SYNC_TIMEOUT, ChannelTransport
from . import keepalive
from .domxml import API_CHANNEL

CHUNK = 1 << 16


class StreamTransport(ChannelTransport):
    """ChannelTransport over a libvirt stream opened on the domain's API channel."""

    def __init__(self, conn: Any, dom: Any, name: str, timeout: float, host: Any = None) -> None:
        """`host`: the LibvirtHost the VM is on (its name, URI and alive() for the errors)."""
        self.name = name
        self._host = host
        self.timeout = timeout
        self.sync_timeout = SYNC_TIMEOUT
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue()
        self._stream = conn.newStream(0)
        try:
            dom.openChannel(API_CHANNEL, self._stream, 0)
        except libvirt.libvirtError as exc:
            raise GuestError(f"vm '{name}': cannot open its nestor API channel through libvirt: "
                             f"{self._why(exc)}",
                             hint="a VM with nesting on gets the channel from its next start") from exc
        self._closed = False
        threading.Thread(target=self._pump, name=f"channel-{name}", daemon=True).start()
        self._start()

    def _pump(self) -> None:
        while not self._closed:
            try:
                data = self._stream.recv(CHUNK)
            except libvirt.libvirtError as exc:
                self._chunks.put(OSError(self._why(exc)))
                return
            if isinstance(data, int):  # -2: would block (not on a blocking stream)
                continue
            self._chunks.put(bytes(data))
            if not data:
                return

    def _why(self, exc: Any) -> str:
        """libvirt's message; when the connection died, that the host stopped answering."""
        host = self._host
        if host is not None and not host.alive():
            return keepalive.stopped_answering(host.name, host.uri, str(exc.get_error_message())).message
        return str(exc.get_error_message())

    def _write(self, data: bytes, wait: float) -> None:
        # A blocking libvirt stream has no timeout of its own: a send waits for the guest to read
        # (virtio-serial's buffer), bounded by the VM and by keepalive (a dead host), not by `wait`.
        view = memoryview(data)
        while view:
            try:
                sent = self._stream.send(bytes(view))
            except libvirt.libvirtError as exc:
                raise GuestError(f"vm '{self.name}': its nestor API channel failed: {self._why(exc)}") from exc
            if sent < 0:
                raise GuestError(f"vm '{self.name}': its nestor API channel failed (send returned {sent})")
            view = view[sent:]

    def _read(self, wait: float) -> bytes | None:
        try:
            item = self._chunks.get(timeout=wait)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.abort()
        except libvirt.libvirtError:
            pass
