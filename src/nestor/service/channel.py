"""The host ↔ guest channel to a nested-host guest's nestor API.

Each nested-host guest has a virtio-serial port (paths.API_PORT) whose host end is a unix socket
in the VM's directory (paths.API_SOCK). Over it travel HTTP requests and responses, one JSON
line each (base64 bodies), so L0 drives L1's warm `nestor serve` with the same typed client it
uses for any nestor API, without a network, a token or a cold CLI in the guest::

    host → guest   {"id": 7, "method": "GET", "path": "/v1/vms", "headers": {...}, "body": ""}
    guest → host   {"id": 7, "status": 200, "headers": {...}, "body": "W10="}

The port is one byte stream: a client that went away mid-request leaves its answer in the
pipe. So every session starts with a sync (`{"id": N, "sync": true}`, answered in kind) and the
host discards every line until the answer with its own id, as QGA's guest-sync-delimited does.
One client at a time holds the channel (an flock beside the VM's lock).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..engine import process
from ..errors import GuestError
from ..state.lock import file_lock
from .core import Core

if TYPE_CHECKING:
    from ..client import Client

CONNECT_TIMEOUT = 5.0
SYNC_TIMEOUT = 5.0
MAX_LINE = 64 << 20  # a response larger than this is refused (a guest is not trusted)

log = logging.getLogger("nestor.channel")
log.addHandler(logging.NullHandler())


# -- host side ---------------------------------------------------------------------------------
class ChannelTransport(httpx.BaseTransport):
    """An httpx transport over a VM's channel socket (the host end)."""

    def __init__(self, sock_path: Path, name: str, timeout: float, sync_timeout: float = SYNC_TIMEOUT) -> None:
        self.name = name
        self.timeout = timeout
        self.sync_timeout = sync_timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(CONNECT_TIMEOUT)
        try:
            self._sock.connect(str(sock_path))
        except OSError as exc:
            self._sock.close()
            raise GuestError(f"vm '{name}': cannot reach its nestor API channel: {exc}",
                             hint=f"nestor vm show {name}") from exc
        self._start()

    def _start(self) -> None:
        self._buf = b""
        self._ids = secrets.randbelow(1 << 40)
        try:
            self._sync()
        except BaseException:
            self.close()
            raise

    # The byte stream: a unix socket here; a subclass may carry it otherwise (a libvirt stream).
    def _write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _read(self, wait: float) -> bytes | None:
        """Up to 1 MiB, b"" when the peer closed, None when nothing came within `wait` s."""
        self._sock.settimeout(wait)
        try:
            return self._sock.recv(1 << 20)
        except TimeoutError:
            return None

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _send(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message).encode() + b"\n")

    def _receive(self, want: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if sep:
                self._buf = rest
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # a torn line from an earlier session
                if isinstance(message, dict) and message.get("id") == want:
                    return message
                continue  # an answer meant for a client that went away
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"vm '{self.name}': no answer from its nestor API within {timeout:.0f} s",
                                 hint="the guest may still be booting; nestor vm log shows it")
            if len(self._buf) > MAX_LINE:
                raise GuestError(f"vm '{self.name}': its nestor API sent more than {MAX_LINE >> 20} MiB in one answer")
            try:
                chunk = self._read(min(left, 1.0))
            except OSError as exc:
                raise GuestError(f"vm '{self.name}': its nestor API channel failed: {exc}") from exc
            if chunk is None:
                continue
            if not chunk:
                raise GuestError(f"vm '{self.name}': its nestor API channel closed", hint=f"nestor vm show {self.name}")
            self._buf += chunk

    def _sync(self) -> None:
        want = self._next_id()
        self._send({"id": want, "sync": True})
        self._receive(want, min(self.sync_timeout, self.timeout))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        want = self._next_id()
        body = request.read()
        timeout = request.extensions.get("timeout", {}).get("read") or self.timeout
        self._send({"id": want, "method": request.method, "path": request.url.raw_path.decode(),
                    "headers": {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")},
                    "body": base64.b64encode(body).decode()})
        answer = self._receive(want, float(timeout))
        if "error" in answer:
            raise GuestError(f"vm '{self.name}': {str(answer['error'])[:300]}")
        return httpx.Response(int(answer.get("status", 502)), headers=answer.get("headers") or {},
                              content=base64.b64decode(answer.get("body") or ""))

    def close(self) -> None:
        self._sock.close()


GUEST_TIMEOUT = 60.0  # Service.guest(): a request's default wait, and the wait for the channel's lock


def open_client(core: Core, name: str, timeout: float, sync_timeout: float = SYNC_TIMEOUT) -> Client:
    """The typed API client (nestor.client.Client) of the nestor inside VM `name`, holding the
    channel (its lock) until it is closed. `sync_timeout` bounds the session's first exchange
    (is the guest's end open at all?)."""
    from ..client import Client

    files = core.running_files(name)
    if not files.api_sock.exists():
        raise GuestError(f"vm '{name}' has no nestor API channel", hint="use the nested-host image, which runs nestor serve")
    lock = files.lock.with_name(f"api-{files.dir.name}.lock")
    held = ExitStack()
    try:
        held.enter_context(file_lock(lock, f"vm '{name}': another command is using its nestor API channel",
                                     timeout=timeout))
        transport = ChannelTransport(files.api_sock, name, timeout, sync_timeout)
        api = Client(transport=transport, timeout=timeout, where=name)
    except BaseException:
        held.close()
        raise
    api.close_also([held])
    return api


@contextmanager
def client(core: Core, name: str, timeout: float, sync_timeout: float = SYNC_TIMEOUT) -> Iterator[Client]:
    """open_client as a context."""
    with open_client(core, name, timeout, sync_timeout) as api:
        yield api


def wait_ready(core: Core, name: str, timeout: float) -> None:
    """Wait until the nestor inside VM `name` answers on its channel (it starts after boot)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            # A short sync: until the guest opens its end nothing answers, so ask again soon. Once
            # it answers, the request may wait for the daemon to finish starting (its socket is
            # bound before it serves, so the request queues there).
            with client(core, name, timeout=max(5.0, deadline - time.monotonic()), sync_timeout=2.0) as api:
                api.vm_list()
            return
        except GuestError:
            if time.monotonic() > deadline:
                raise
            if process.live_pid(core.vm_dir(core.vms.get(name))) is None:
                raise GuestError(f"vm '{name}' stopped while its nestor was starting",
                                 hint=f"nestor vm log {name}") from None
            time.sleep(0.2)


# -- guest side: service/channel_guest.py (no httpx there: an L1's daemon imports it at boot) --
