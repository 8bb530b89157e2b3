"""Start, observe and end one detached QEMU per VM (daemonless: it outlives nestor).

QEMU cannot -daemonize under `-sandbox spawn=deny` (fork is denied after seccomp starts), so
nestor starts it in a new session and lets it be reparented when nestor exits. Liveness is
observed from the pidfile plus /proc, checking the command line so a recycled PID is never
mistaken for our QEMU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .. import paths
from ..errors import EngineError

START_TIMEOUT = 15.0
EXIT_TIMEOUT = 10.0


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def live_pid(vm_dir: Path) -> int | None:
    """The PID of this VM's QEMU if it is alive, else None (zombies count as dead)."""
    try:
        pid = int((vm_dir / paths.PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return None
    marker = str(vm_dir / paths.QMP_SOCK)
    if not any(marker in arg for arg in _cmdline(pid)):
        return None  # the PID was recycled by something else
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


def clean_runtime_files(vm_dir: Path) -> None:
    for name in (paths.PIDFILE, paths.QMP_SOCK, paths.SERIAL_SOCK, paths.QGA_SOCK):
        (vm_dir / name).unlink(missing_ok=True)


def spawn(argv: list[str], vm_dir: Path, netns: str | None) -> int:
    """Start QEMU detached; return its PID once QMP listens, or raise with QEMU's own error."""
    clean_runtime_files(vm_dir)
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]  # ip netns exec execs: the PID is QEMU's
    log_path = vm_dir / paths.QEMU_LOG
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot start {argv[0]}: {exc}", hint="apt-get install qemu-system-x86") from exc
    deadline = time.monotonic() + START_TIMEOUT
    qmp = vm_dir / paths.QMP_SOCK
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise EngineError(
                f"QEMU exited at start (status {code}): {last_line(log_path)}",
                hint=f"see {log_path}",
            )
        if qmp.exists() and (vm_dir / paths.PIDFILE).exists():
            return proc.pid
        time.sleep(0.01)
    terminate(proc.pid)
    raise EngineError(f"QEMU did not open its QMP socket within {START_TIMEOUT:.0f} s", hint=f"see {log_path}")


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


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
    """SIGTERM, then SIGKILL: the hard stop. Only ever called on a PID live_pid() vouched for."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_exit(pid, timeout if sig == signal.SIGTERM else EXIT_TIMEOUT):
            return
    raise EngineError(f"QEMU pid {pid} did not exit after SIGKILL")
