"""Start, observe and end one detached QEMU per VM (daemonless: it outlives nestor).

QEMU cannot -daemonize under `-sandbox spawn=deny` (fork is denied after seccomp starts), so
nestor starts it in a new session and lets it be reparented when nestor exits. Liveness is
observed from the pidfile plus /proc, checking the command line so a recycled PID is never
mistaken for our QEMU.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .. import paths
from ..errors import EngineError
from ..files import open_private
from ..pids import EXIT_TIMEOUT, pid_from, started_at, terminate, wait_exit
from . import seriallog

START_TIMEOUT = 15.0

__all__ = ["EXIT_TIMEOUT", "clean_runtime_files", "live_pid", "spawn", "started_at", "terminate", "wait_exit"]


def live_pid(vm_dir: Path) -> int | None:
    """The PID of this VM's QEMU if it is alive, else None."""
    return pid_from(vm_dir / paths.PIDFILE, str(vm_dir / paths.QMP_SOCK))


def clean_runtime_files(vm_dir: Path) -> None:
    for name in (paths.PIDFILE, paths.QMP_SOCK, paths.SERIAL_SOCK, paths.QGA_SOCK, paths.API_SOCK):
        (vm_dir / name).unlink(missing_ok=True)


def spawn(argv: list[str], vm_dir: Path, netns: str | None, pass_fds: tuple[int, ...] = (),
          uid: int | None = None) -> int:
    """Start QEMU detached; return its PID once QMP listens, or raise with QEMU's own error.
    ``pass_fds``: descriptors QEMU gets under the same numbers (its taps). ``uid``: the user QEMU
    drops root to (engine/runas.py); then it returns only once QEMU runs as that user."""
    clean_runtime_files(vm_dir)
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]  # ip netns exec execs: the PID is QEMU's
    log_path = vm_dir / paths.QEMU_LOG
    (vm_dir / "serial.pipe").unlink(missing_ok=True)  # the FIFO of the per-VM log pump nestor used before
    seriallog.prepare(vm_dir / paths.SERIAL_LOG)
    seriallog.enforce(log_path)  # qemu.log is appended across starts: the cap holds at each one too
    return _spawn(argv, vm_dir, log_path, pass_fds, uid)


def _spawn(argv: list[str], vm_dir: Path, log_path: Path, pass_fds: tuple[int, ...] = (),
           uid: int | None = None) -> int:
    with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                pass_fds=pass_fds,
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
        if qmp.exists() and (vm_dir / paths.PIDFILE).exists() and (uid is None or _runs_as(proc.pid, uid)):
            return proc.pid
        time.sleep(0.01)
    terminate(proc.pid)
    raise EngineError(f"QEMU did not open its QMP socket within {START_TIMEOUT:.0f} s", hint=f"see {log_path}")


def _runs_as(pid: int, uid: int) -> bool:
    """Has QEMU dropped root to `uid`? It binds its QMP socket (and greets on it, from the monitor's
    own thread) and writes its pidfile before it switches user, just before its main loop."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return line.split()[1:] == [str(uid)] * 4
    except OSError:
        pass
    return False


def last_line(path: Path, window: int = 1 << 16) -> str:
    """The last non-empty line of the log (read from its last `window` bytes: it may be large)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - window))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


