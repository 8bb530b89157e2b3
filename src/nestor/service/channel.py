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

from .. import untrusted
from ..engine import process
from ..errors import GuestError
from ..state.lock import file_lock
from .core import Core

if TYPE_CHECKING:
    from ..client import Client

CONNECT_TIMEOUT = 5.0
SYNC_TIMEOUT = 5.0
# A guest is not trusted: an answer line longer than this is refused. It holds an honest log page
# (the serial log and its rotated copy, 2 x 2 MiB, base64: 5.4 MiB) and tree (MAX_NODES nodes).
MAX_LINE = 8 << 20
# The only headers of a guest's answer that reach the client: never content-encoding (httpx would
# inflate a stacked gzip bomb) nor transfer-encoding; the body is whole, its length is the line's.
ANSWER_HEADERS = frozenset({"content-type", "allow", "location", "retry-after"})
MAX_HEADER = 1024
MAX_ENVELOPE = 4096  # objects and arrays in one line (honest ones: the body is base64, a handful)

log = logging.getLogger("nestor.channel")
log.addHandler(logging.NullHandler())


# -- host side ---------------------------------------------------------------------------------
class ChannelTransport(httpx.BaseTransport):
    """An httpx transport over a VM's channel socket (the host end).

    Each exchange (the sync, then each request and its answer) has one deadline, whatever the
    guest trickles; `deadline` (time.monotonic()) also bounds the whole session when given."""

    deadline: float | None = None

    def __init__(self, sock_path: Path, name: str, timeout: float, sync_timeout: float = SYNC_TIMEOUT,
                 deadline: float | None = None) -> None:
        self.name = name
        self.timeout = timeout
        self.sync_timeout = sync_timeout
        self.deadline = deadline
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
    def _write(self, data: bytes, wait: float) -> None:
        """All of `data` within `wait` s (sendall: the timeout bounds the whole send)."""
        self._sock.settimeout(wait)
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

    def _deadline(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        return deadline if self.deadline is None else min(deadline, self.deadline)

    def _send(self, message: dict[str, Any], deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GuestError(f"vm '{self.name}': no time left to reach its nestor API", hint="raise --timeout")
        try:
            self._write(json.dumps(message).encode() + b"\n", left)
        except OSError as exc:
            raise GuestError(f"vm '{self.name}': its nestor API channel failed: {exc or type(exc).__name__}") from exc

    def _receive(self, want: int, deadline: float) -> dict[str, Any]:
        timeout = max(0.0, deadline - time.monotonic())
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if sep:
                self._buf = rest
                if len(line) > MAX_LINE:
                    raise GuestError(f"vm '{self.name}': its nestor API sent more than {MAX_LINE >> 20} MiB in one answer")
                try:
                    message = untrusted.loads(line, MAX_ENVELOPE)
                except ValueError:
                    continue  # a torn line from an earlier session (or garbage: the deadline ends it)
                if isinstance(message, dict) and message.get("id") == want:
                    return message
                continue  # an answer meant for a client that went away
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"vm '{self.name}': no answer from its nestor API within {timeout:.1f} s",
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
        deadline = self._deadline(min(self.sync_timeout, self.timeout))
        self._send({"id": want, "sync": True}, deadline)
        self._receive(want, deadline)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        want = self._next_id()
        body = request.read()
        timeout = request.extensions.get("timeout", {}).get("read") or self.timeout
        deadline = self._deadline(float(timeout))  # one for the request and its whole answer
        self._send({"id": want, "method": request.method, "path": request.url.raw_path.decode(),
                    "headers": {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")},
                    "body": base64.b64encode(body).decode()}, deadline)
        return self._response(self._receive(want, deadline))

    def _response(self, answer: dict[str, Any]) -> httpx.Response:
        """The guest's answer as an httpx response, checked field by field (a guest is not trusted)."""
        def malformed(what: str) -> GuestError:
            return GuestError(f"vm '{self.name}': its nestor API sent a malformed answer ({what})",
                              hint=f"the nestor inside '{self.name}' is not one this nestor understands")

        if "error" in answer:
            error = answer["error"]
            if not isinstance(error, str):
                raise malformed("an error that is not a string")
            raise GuestError(f"vm '{self.name}': {error[:300]}")
        status = answer.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise malformed(f"status {str(status)[:20]!r}")
        headers = answer.get("headers") or {}
        if not isinstance(headers, dict):
            raise malformed("headers that are not an object")
        kept = {k.lower(): v for k, v in headers.items()
                if isinstance(k, str) and k.lower() in ANSWER_HEADERS and isinstance(v, str)
                and len(v) <= MAX_HEADER and v.isascii() and v.isprintable()}
        body = answer.get("body") or ""
        if not isinstance(body, str):
            raise malformed("a body that is not a string")
        try:
            content = base64.b64decode(body, validate=True)
        except ValueError:
            raise malformed("a body that is not base64") from None
        return httpx.Response(status, headers=kept, content=content)

    def close(self) -> None:
        self._sock.close()


GUEST_TIMEOUT = 60.0  # Service.guest(): a request's default wait, and the wait for the channel's lock


def open_client(core: Core, name: str, timeout: float, sync_timeout: float = SYNC_TIMEOUT,
                deadline: float | None = None, lock_wait: float | None = None) -> Client:
    """The typed API client (nestor.client.Client) of the nestor inside VM `name`, holding the
    channel (its lock) until it is closed. `timeout` bounds each exchange, `sync_timeout` the
    session's first (is the guest's end open at all?), `deadline` (time.monotonic()) the whole
    session when given, `lock_wait` the wait for the channel when another command holds it
    (Conflict after it; default: as long as an exchange)."""
    from ..client import Client

    files = core.running_files(name)
    if not files.api_sock.exists():
        raise GuestError(f"vm '{name}' has no nestor API channel", hint="use the nested-host image, which runs nestor serve")
    lock = files.lock.with_name(f"api-{files.dir.name}.lock")
    wait = timeout if deadline is None else max(0.1, min(timeout, deadline - time.monotonic()))
    if lock_wait is not None:
        wait = min(wait, lock_wait)
    held = ExitStack()
    try:
        held.enter_context(file_lock(lock, f"vm '{name}': another command is using its nestor API channel",
                                     timeout=wait))
        transport = ChannelTransport(files.api_sock, name, timeout, sync_timeout, deadline)
        api = Client(transport=transport, timeout=timeout, where=name)
    except BaseException:
        held.close()
        raise
    api.close_also([held])
    return api


@contextmanager
def client(core: Core, name: str, timeout: float, sync_timeout: float = SYNC_TIMEOUT,
           deadline: float | None = None, lock_wait: float | None = None) -> Iterator[Client]:
    """open_client as a context. An answer the client cannot read is a GuestError that names the VM."""
    from ..client import MalformedAnswer

    with open_client(core, name, timeout, sync_timeout, deadline, lock_wait) as api:
        try:
            yield api
        except MalformedAnswer as exc:
            raise GuestError(f"vm '{name}': {exc.message}", hint=exc.hint) from exc


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
