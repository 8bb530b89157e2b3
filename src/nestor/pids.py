"""Processes nestor started and supervises by pidfile (QEMU, the balancer, dnsmasq).

A pidfile alone is not proof: the PID may have been recycled. `pid_from` also checks the
process's command line for markers only ours carries, and counts zombies as dead.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .errors import HostError

EXIT_TIMEOUT = 10.0


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_from(pidfile: Path, *markers: str) -> int | None:
    """The live process a pidfile names, if its command line holds every marker.

    Zombies count as dead, and the markers keep a recycled PID from being taken for ours.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return None
    args = cmdline(pid)
    if not all(any(marker in arg for arg in args) for marker in markers):
        return None
    return pid


def started_at(pid: int) -> float | None:
    """Wall-clock start time of a process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _proc_state(pid)
        if state is None or state in ("Z", "X"):
            _reap(pid)
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it


def terminate(pid: int, timeout: float = EXIT_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after `timeout`. Only ever called on a PID pid_from() vouched for."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_exit(pid, timeout if sig == signal.SIGTERM else EXIT_TIMEOUT):
            return
    raise HostError(f"process {pid} did not exit after SIGKILL", hint="it may be stuck in the kernel (D state)")
