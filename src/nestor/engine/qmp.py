"""A typed, synchronous facade over `qemu.qmp`: one method per QMP command nestor uses.

qemu.qmp is asyncio-based; each Monitor owns a private event loop so callers stay
synchronous. qemu.qmp (and asyncio) are imported on first use: `vm list` never needs them.
Every call has a timeout. A dropped connection means we cannot know whether a
command ran (qemu.qmp's ExecInterruptedError): callers re-observe state instead of assuming.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from ..errors import EngineError, GuestError

QMP_TIMEOUT = 10.0
AGENT_TIMEOUT = 10.0
T = TypeVar("T")

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

REFUSED_RETRY = 1.0


class _Session:
    """A QMP-speaking connection on a private event loop."""

    error: type[EngineError] | type[GuestError] = EngineError
    greeting = True

    def __init__(self, sock: Path, name: str, timeout: float) -> None:
        self.sock = sock
        self.name = name
        self.timeout = timeout
        import asyncio

        from qemu.qmp import QMPClient

        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(name)
        self._client.await_greeting = self.greeting
        self._client.negotiate = self.greeting

    deadline: float | None = None  # time.monotonic() by which the whole session ends (the agent's)

    def _left(self, timeout: float | None) -> float:
        """This command's time: its own timeout, within the session's deadline."""
        wait = timeout or self.timeout
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise self.error(f"vm '{self.name}': no time left on {self.sock.name} ({self.timeout:.0f} s in all)",
                                 hint="raise --timeout")
        return wait

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        import asyncio

        from qemu.qmp import ExecuteError, QMPError

        try:
            wait = self._left(timeout)
        except BaseException:
            coro.close()
            raise
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, wait))
        except TimeoutError as exc:
            raise self.error(f"vm '{self.name}': no answer on {self.sock.name} within {wait:.1f} s") from exc
        except ExecuteError as exc:
            raise self.error(f"vm '{self.name}': {exc.error_class}: {exc}") from exc
        except (QMPError, OSError) as exc:
            raise self.error(f"vm '{self.name}': {self.sock.name}: {exc}") from exc

    def __enter__(self) -> Self:
        try:
            self._connect()
        except BaseException:
            self._close()
            raise
        return self

    async def _open(self) -> None:
        """qemu.qmp's connect(), without its race: it asserts the session is RUNNING when it
        returns, but a QEMU that exits right after negotiation (a `vm show` during a stop) has
        moved it to DISCONNECTING by then, and the bare AssertionError reached users."""
        from qemu.qmp import Runstate

        try:
            await self._client.connect(str(self.sock))
        except AssertionError:
            if self._client.runstate == Runstate.RUNNING:
                raise
            raise ConnectionResetError("QEMU closed the connection as the session began") from None

    def _connect(self) -> None:
        """Connect; a refusal is retried for up to REFUSED_RETRY s: QEMU binds the socket (the
        file appears, which is what `spawn` waits for) a moment before it listens on it."""
        import time

        from qemu.qmp import ConnectError

        deadline = time.monotonic() + REFUSED_RETRY
        while True:
            try:
                self._run(self._open())
                return
            except EngineError as exc:
                cause = exc.__cause__
                refused = isinstance(cause, ConnectionRefusedError) or (
                    isinstance(cause, ConnectError) and isinstance(cause.exc, ConnectionRefusedError))
                if not refused or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _close(self) -> None:
        """Disconnect (which reaps qemu.qmp's reader and writer tasks, also after a failed or
        half-made connect), then close the loop."""
        import asyncio

        from qemu.qmp import Runstate

        try:
            if self._client.runstate != Runstate.IDLE:
                self._loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 2.0))
        except Exception:
            log.debug("disconnect from %s failed", self.sock, exc_info=True)
        finally:
            self._loop.close()

    def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self._run(self._client.execute(cmd, args), timeout)


class Monitor(_Session):
    """QEMU's QMP monitor of one VM."""

    def __init__(self, sock: Path, name: str, timeout: float = QMP_TIMEOUT) -> None:
        super().__init__(sock, name, timeout)

    def status(self) -> str:
        return str(self.execute("query-status")["status"])

    def powerdown(self) -> None:
        self.execute("system_powerdown")

    def quit(self) -> None:
        try:
            self.execute("quit")
        except EngineError:
            pass  # QEMU closes the socket as it exits: the answer may never come

    def pause(self) -> None:
        self.execute("stop")

    def resume(self) -> None:
        self.execute("cont")

    def registers(self) -> str:
        return str(self.execute("human-monitor-command", {"command-line": "info registers -a"}))

    def vcpu_stats(self) -> list[dict[str, Any]]:
        """KVM's per-vCPU statistics (QEMU >= 7.1); empty under TCG."""
        result = self.execute("query-stats", {"target": "vcpu"})
        return list(result)

    # -- memory: the virtio-balloon device (argv.py names it balloon0) ----------------------------
    def balloon(self, target: int) -> None:
        """Ask the guest to give back memory until it has `target` bytes (QMP `balloon`)."""
        self.execute("balloon", {"value": int(target)})

    def balloon_actual(self) -> int:
        """The memory the guest has now, in bytes (QMP `query-balloon`)."""
        return int(self.execute("query-balloon")["actual"])

    def balloon_stats_interval(self) -> int:
        return int(self.execute("qom-get", {"path": BALLOON_PATH, "property": "guest-stats-polling-interval"}))

    def set_balloon_stats_interval(self, seconds: int) -> None:
        """Have the guest report its memory statistics every `seconds` (0: never).

        Setting it again re-arms QEMU's timer, so callers set it only when it differs."""
        self.execute("qom-set", {"path": BALLOON_PATH, "property": "guest-stats-polling-interval", "value": seconds})

    def balloon_stats(self) -> BalloonStats:
        """The guest's last memory report (qom-get guest-stats); last_update 0 means none yet."""
        raw = self.execute("qom-get", {"path": BALLOON_PATH, "property": "guest-stats"})
        # An unreported statistic is -1, which QEMU prints as a uint64 (2**64 - 1).
        stats = {str(k): int(v) for k, v in raw.get("stats", {}).items() if 0 <= int(v) < 1 << 62}
        return BalloonStats(stats=stats, last_update=int(raw.get("last-update", 0)))

    # -- migration to and from a file descriptor (save / restore) ------------------------------
    def send_fd(self, fd: int, fdname: str) -> None:
        """Pass an open fd to QEMU over the QMP socket (SCM_RIGHTS), then name it with `getfd`."""
        try:
            self._client.send_fd_scm(fd)
        except OSError as exc:
            raise EngineError(f"vm '{self.name}': cannot pass a file to QEMU: {exc}") from exc
        self.execute("getfd", {"fdname": fdname})

    def migrate(self, uri: str) -> None:
        self.execute("migrate", {"uri": uri})

    def migrate_incoming(self, uri: str) -> None:
        self.execute("migrate-incoming", {"uri": uri})

    def migration(self) -> dict[str, Any]:
        """QMP `query-migrate`: {"status": "active" | "completed" | "failed" | ..., ...}."""
        return dict(self.execute("query-migrate"))


BALLOON_PATH = "/machine/peripheral/balloon0"


@dataclass(frozen=True)
class BalloonStats:
    """The guest's memory report, in bytes (QEMU's stat-* names; absent values are dropped)."""

    stats: dict[str, int]
    last_update: int  # QEMU's wall-clock seconds of the report; 0: the guest has not reported

    @property
    def total(self) -> int | None:
        return self.stats.get("stat-total-memory")

    @property
    def available(self) -> int | None:
        return self.stats.get("stat-available-memory", self.stats.get("stat-free-memory"))


_EFER = re.compile(r"EFER=([0-9a-fA-F]+)")
_CR4 = re.compile(r"CR4=([0-9a-fA-F]+)")
EFER_SVME = 1 << 12
CR4_VMXE = 1 << 13


def hypervisor_bits(registers: str) -> list[bool]:
    """Per vCPU: is EFER.SVME or CR4.VMXE set (a hypervisor has enabled virtualization)."""
    efers = [int(v, 16) for v in _EFER.findall(registers)]
    cr4s = [int(v, 16) for v in _CR4.findall(registers)]
    bits = [bool(e & EFER_SVME) for e in efers]
    for index, cr4 in enumerate(cr4s):
        if index < len(bits):
            bits[index] = bits[index] or bool(cr4 & CR4_VMXE)
    return bits


class Agent(_Session):
    """The QEMU guest agent (QGA) of one VM; it sends no greeting and needs no negotiation.

    The agent's channel is a byte stream that outlives its clients: a client killed half-way
    leaves a partial request in the agent's parser or an unread answer in the pipe, which the
    next client would take for its own. So every connection first resynchronises as QGA
    documents: a 0xFF byte (the agent drops any partial input), then `guest-sync-delimited`
    with a fresh id, whose answer is preceded by 0xFF; everything before it is stale.
    """

    error = GuestError
    greeting = False
    SYNC_TIMEOUT = 5.0

    def __init__(self, sock: Path, name: str, timeout: float = AGENT_TIMEOUT) -> None:
        """`timeout` bounds the whole session, from connecting to the last answer: a guest that
        trickles its answers a byte at a time cannot hold a caller past it."""
        super().__init__(sock, name, timeout)

    def __enter__(self) -> Self:
        self.deadline = time.monotonic() + self.timeout
        try:
            raw = self._synced_socket()
            self._run(self._client.connect(raw))
        except BaseException:
            self._loop.close()
            raise
        return self

    def _synced_socket(self) -> socket.socket:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # One deadline for the sync, not one per recv(): stale bytes trickled slower than a
        # per-recv timeout would otherwise keep the caller here forever.
        deadline = time.monotonic() + min(self.timeout, self.SYNC_TIMEOUT)
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)

        def left() -> float:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            return wait

        try:
            raw.settimeout(left())
            raw.connect(str(self.sock))
            token = secrets.randbelow(1 << 31)
            raw.settimeout(left())
            raw.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode()
                        + b"\n")
            buffer = b""
            while True:
                raw.settimeout(left())
                chunk = raw.recv(65536)
                if not chunk:
                    raise GuestError(f"vm '{self.name}': the guest agent closed the connection")
                buffer += chunk
                while True:
                    start = buffer.find(b"\xff")  # never in JSON (UTF-8): only the sync's sentinel
                    if start < 0:
                        buffer = b""  # all stale: an older client's answers
                        break
                    end = buffer.find(b"\n", start)
                    if end < 0:
                        buffer = buffer[start:][: 1 << 16]  # the answer is still coming
                        break
                    try:
                        answer = json.loads(buffer[start + 1:end])
                    except ValueError:
                        answer = None
                    if isinstance(answer, dict) and answer.get("return") == token:
                        raw.settimeout(None)
                        return raw
                    buffer = buffer[end + 1:]  # an older client's sync: keep looking
        except TimeoutError as exc:
            raw.close()
            raise GuestError(f"vm '{self.name}': the guest agent did not answer guest-sync-delimited "
                             f"within {min(self.timeout, self.SYNC_TIMEOUT):.1f} s",
                             hint="is qemu-guest-agent running in the guest?") from exc
        except OSError as exc:
            raw.close()
            raise GuestError(f"vm '{self.name}': {self.sock.name}: {exc}") from exc
        except BaseException:
            raw.close()
            raise

    def ping(self, timeout: float | None = None) -> None:
        self.execute("guest-ping", timeout=timeout)

    def write_file(self, path: str, data: bytes, mode: str = "w") -> None:
        """Write a file in the guest (guest-file-open/write/close)."""
        handle = self.execute("guest-file-open", {"path": path, "mode": mode})
        try:
            self.execute("guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(data).decode()})
        finally:
            self.execute("guest-file-close", {"handle": handle})

    def exec(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run argv in the guest; return (exit code, stdout, stderr).

        One deadline for the whole exec (its start and every status poll, within the session's),
        and no poll is ever retried: QGA forgets a pid once guest-exec-status has answered
        `exited: true`, so a poll whose answer was lost (a timed-out read) cannot be asked again
        on this or another connection. The error then says so, and an "Invalid parameter 'pid'"
        (another client polled the pid to its end) is named for what it is."""
        args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin).decode()
        deadline = time.monotonic() + timeout
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        shown = " ".join(argv)[:200]
        started = self.execute("guest-exec", args, timeout=max(deadline - time.monotonic(), 0.001))
        pid = started.get("pid") if isinstance(started, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise self._malformed("guest-exec", started)
        delay = 0.02
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"vm '{self.name}': '{shown}' did not finish within {timeout:.0f} s",
                                 hint="raise --timeout")
            try:
                status = self.execute("guest-exec-status", {"pid": pid}, timeout=left)
            except GuestError as exc:
                raise exec_status_error(self.name, shown, pid, exc) from exc
            if not isinstance(status, dict):
                raise self._malformed("guest-exec-status", status)
            if status.get("exited"):
                break
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 0.25)
        try:
            out = base64.b64decode(status.get("out-data", ""), validate=True)
            err = base64.b64decode(status.get("err-data", ""), validate=True)
        except (TypeError, ValueError):
            raise self._malformed("guest-exec-status", status) from None
        code = status.get("exitcode", -status["signal"] if isinstance(status.get("signal"), int) else 1)
        if not isinstance(code, int) or isinstance(code, bool):
            raise self._malformed("guest-exec-status", status)
        return code, out, err

    def _malformed(self, command: str, answer: Any) -> GuestError:
        return GuestError(f"vm '{self.name}': the guest agent's answer to {command} is malformed: {str(answer)[:100]}",
                          hint="is qemu-guest-agent the agent running in the guest?")


def exec_status_error(vm: str, shown: str, pid: int, exc: GuestError) -> GuestError:
    """A guest-exec-status that failed, reworded with its cause. Never retried (see Agent.exec)."""
    if "Invalid parameter 'pid'" in exc.message:
        return GuestError(f"vm '{vm}': the guest agent no longer knows pid {pid} of '{shown}': another client "
                          "collected its end (QGA forgets a pid once its exit was reported)",
                          hint="run one exec per command; nestor never polls a pid twice")
    if "no answer" in exc.message or "no time left" in exc.message:
        return GuestError(f"vm '{vm}': '{shown}' (pid {pid}): the guest agent did not answer a status poll in time; "
                          "its exit status is lost (QGA reports it once)", hint="raise --timeout")
    return exc
